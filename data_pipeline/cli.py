"""``ovi-data``: run the data pipeline from a YAML config (plus ``key=value`` overrides).

    ovi-data run --config configs/data/default.yaml --input /videos --output /out [--engine ray] [k=v ...]
    ovi-data run ... --disable sync,aesthetic,face   # run without the weight-needing quality filters
    ovi-data summary --output /out          # print the summary of a finished (or interrupted) run
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from data_pipeline.config import load_data_config
from ovi.logs import setup_logging

DISABLE_KEYS = {"sync": "sync.enabled", "aesthetic": "filter.aesthetic.enabled", "face": "filter.face.enabled",
                "motion": "filter.motion.enabled"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ovi-data", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline (resumes where an earlier run over --output stopped)")
    run.add_argument("--config", type=Path, help="YAML config (schema: data_pipeline/config.py)")
    run.add_argument("--input", help="folder of raw files, a text file listing paths/URLs, or s3://... (fsspec)")
    run.add_argument("--output", help="output folder: manifests/, clips/, packed/, shards/, summary.json")
    run.add_argument("--engine", choices=("local", "ray"), help="overrides engine.name")
    run.add_argument("--stages", help="comma-separated subset of stages to run (default: all of the mode)")
    run.add_argument("--disable", help="comma-separated quality steps to switch off explicitly: sync, aesthetic, "
                                       "face, motion (they are on by default and need weights)")
    run.add_argument("overrides", nargs="*", help="config overrides, e.g. filter.min_width=480 engine.workers=4")
    summ = sub.add_parser("summary", help="print the summary of a run")
    summ.add_argument("--output", required=True, help="the run's output folder or URL")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(logging.INFO, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    from data_pipeline.runner import format_summary, run_pipeline
    from data_pipeline.weights import MissingWeights

    if args.command == "summary":
        from data_pipeline.storage import Storage

        storage = Storage(args.output)
        if not storage.exists("summary.json"):
            print(f"no summary in {args.output}: the run has not finished; re-run it to resume", file=sys.stderr)
            return 1
        print(format_summary(json.loads(storage.read_bytes("summary.json"))))
        return 0
    overrides = list(args.overrides)
    for key in ("input", "output"):
        if getattr(args, key):
            overrides.append(f"{key}={getattr(args, key)}")
    if args.engine:
        overrides.append(f"engine.name={args.engine}")
    if args.stages:
        overrides.append(f"stages=[{args.stages}]")
    for step in filter(None, (args.disable or "").split(",")):
        if step.strip() not in DISABLE_KEYS:
            print(f"--disable takes {', '.join(DISABLE_KEYS)}; got {step!r}", file=sys.stderr)
            return 2
        overrides.append(f"{DISABLE_KEYS[step.strip()]}=false")
    cfg = load_data_config(args.config, overrides)
    try:
        run_pipeline(cfg)
    except MissingWeights as e:
        print(f"ovi-data: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
