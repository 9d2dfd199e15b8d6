"""Run the pipeline: check the weights, list the inputs, stream them through the stage chain on the chosen
engine (each worker records each input's result itself), write the new shards, and summarise.

A restarted run skips every input a stage has recorded (``data_pipeline.manifest``), so a run killed at any
point resumes with no clip lost or duplicated; a lock file keeps two runs from writing one local output.
"""
from __future__ import annotations

import fcntl
import logging
import time
from contextlib import contextmanager
from typing import Iterator

from data_pipeline.config import AUDIO_STAGES, VIDEO_STAGES, DataPipelineConfig
from data_pipeline.engines import get_engine
from data_pipeline.engines.chain import RunCounts
from data_pipeline.manifest import Manifest, Record, dumps
from data_pipeline.sources import list_inputs
from data_pipeline.stages.pack import write_shards
from data_pipeline.storage import Storage
from data_pipeline.weights import check_weights, quality_steps

log = logging.getLogger(__name__)


@contextmanager
def run_lock(storage: Storage) -> Iterator[None]:
    if not storage.is_local:  # object stores have no advisory locks: one run per output URL is the user's rule
        yield
        return
    storage.root.mkdir(parents=True, exist_ok=True)
    with open(storage.root / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another run is writing {storage.root}; wait for it or use another --output") from None
        yield  # the OS releases the lock when this process ends, even on SIGKILL


def initial_records(cfg: DataPipelineConfig, storage: Storage, first: str) -> tuple[list[Record], dict]:
    """Sources for probe; otherwise the records the stage before ``first`` (in the full order) accepted."""
    order = VIDEO_STAGES if cfg.mode == "video" else AUDIO_STAGES
    i = order.index(first)
    if i == 0:
        return list_inputs(cfg.input, cfg.probe.extensions)
    prev = Manifest(storage, order[i - 1])
    if not storage.list(prev.prefix):
        raise FileNotFoundError(f"stage {first} reads the results of {order[i - 1]}, which has none in "
                                f"{storage.full(prev.prefix)}; run stage {order[i - 1]} first")
    return prev.accepted(), {}


def run_pipeline(cfg: DataPipelineConfig) -> dict:
    """Run every configured stage; returns (and writes to ``{output}/summary.json``) the run summary."""
    if not cfg.output:
        raise ValueError("no output folder: pass --output or output=...")
    if not cfg.input and "probe" in cfg.stage_names:
        raise ValueError("no input: pass --input (a folder, a list file or a bucket URL) or input=...")
    check_weights(cfg)
    storage = Storage(cfg.output)
    engine = get_engine(cfg.engine.name)
    names = cfg.stage_names
    with run_lock(storage):
        from ovi.config import to_yaml

        swept = storage.sweep_temp_files()
        if swept:
            log.info("removed %d temp files left by killed workers", swept)
        storage.write_bytes("config.yaml", to_yaml(cfg).encode())
        records, skipped = initial_records(cfg, storage, names[0])
        log.info("%d inputs for %s (%s engine); stages: %s", len(records), names[0], cfg.engine.name,
                 ", ".join(names))
        start = time.perf_counter()
        counts = engine.run_chain(cfg, names, records)
        extra = write_shards(cfg, engine.parallel_map) if "pack" in names else {}
        elapsed = time.perf_counter() - start
        summary = summarise(cfg, storage, counts, elapsed, skipped, extra)
        storage.write_bytes("summary.json", (dumps(summary) + "\n").encode())
    log.info("summary:\n%s", format_summary(summary))
    return summary


def summarise(cfg: DataPipelineConfig, storage: Storage, counts: RunCounts, elapsed: float, skipped: dict,
              extra: dict) -> dict:
    steps = quality_steps(cfg)
    summary: dict = {"mode": cfg.mode, "engine": cfg.engine.name, "seconds": round(elapsed, 3),
                     "errors_this_run": counts.errors, "skipped_inputs": skipped,
                     "quality_filters": {k: ("on" if v else "off (disabled in the config)") for k, v in steps.items()},
                     "stages": {}}
    for name in cfg.stage_names:
        manifest = Manifest(storage, name).load()
        entries = list(manifest.entries())
        core_s = sum(e.get("cpu_seconds", 0.0) for e in entries)
        outputs = sum(len(e["outputs"]) for e in entries)
        summary["stages"][name] = {
            "inputs": len(manifest),
            "processed": counts.processed.get(name, 0),
            "resumed": counts.resumed.get(name, 0),
            "outputs": outputs,
            "accepted": len(manifest.accepted()),
            "rejected": manifest.rejected_counts(),
            "core_seconds": round(core_s, 3),  # CPU time (worker + its ffmpeg runs) over every recorded input
            "wall_seconds": round(sum(e.get("seconds", 0.0) for e in entries), 3),
            "core_seconds_per_input": round(core_s / len(entries), 4) if entries else None,
            **(extra if name == "pack" else {}),
        }
    return summary


def format_summary(summary: dict) -> str:
    head = f"{'stage':<12}{'inputs':>8}{'done now':>10}{'accepted':>10}{'core-s/in':>11}  rejected"
    lines = [head]
    for name, s in summary["stages"].items():
        rejected = ", ".join(f"{k}={v}" for k, v in s["rejected"].items()) or "-"
        per = "-" if s.get("core_seconds_per_input") is None else f"{s['core_seconds_per_input']:.3f}"
        lines.append(f"{name:<12}{s['inputs']:>8}{s['processed']:>10}{s['accepted']:>10}{per:>11}  {rejected}")
    filters = ", ".join(f"{k}: {v}" for k, v in summary.get("quality_filters", {}).items())
    if filters:
        lines.append(f"quality filters: {filters}")
    if summary.get("skipped_inputs"):
        lines.append("inputs skipped by extension: " + ", ".join(f"{k}={v}" for k, v in
                                                                  summary["skipped_inputs"].items()))
    return "\n".join(lines)
