"""``ovi-data``: run the data pipeline from a YAML config (plus ``key=value`` overrides).

    ovi-data run --config configs/data/default.yaml --input /videos --output /out [--engine ray] [k=v ...]
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ovi-data", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline (resumes where an earlier run over --output stopped)")
    run.add_argument("--config", type=Path, help="YAML config (schema: data_pipeline/config.py)")
    run.add_argument("--input", help="folder of raw files, a text file listing paths/URLs, or s3://... (fsspec)")
    run.add_argument("--output", help="output folder: manifests/, clips/, packed/, shards/, summary.json")
    run.add_argument("--engine", choices=("local", "ray"), help="overrides engine.name")
    run.add_argument("--stages", help="comma-separated subset of stages to run (default: all of the mode)")
    run.add_argument("overrides", nargs="*", help="config overrides, e.g. filter.min_width=480 engine.workers=4")
    summ = sub.add_parser("summary", help="print the summary of a run")
    summ.add_argument("--output", required=True, type=Path)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from data_pipeline.runner import format_summary, run_pipeline

    if args.command == "summary":
        path = args.output / "summary.json"
        if not path.exists():
            print(f"no summary at {path}: the run has not finished; re-run it to resume", file=sys.stderr)
            return 1
        print(format_summary(json.loads(path.read_text())))
        return 0
    overrides = list(args.overrides)
    for key in ("input", "output"):
        if getattr(args, key):
            overrides.append(f"{key}={getattr(args, key)}")
    if args.engine:
        overrides.append(f"engine.name={args.engine}")
    if args.stages:
        overrides.append(f"stages=[{args.stages}]")
    cfg = load_data_config(args.config, overrides)
    run_pipeline(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
