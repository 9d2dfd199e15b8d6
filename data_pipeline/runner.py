"""Run the configured stages in order, each over the records its predecessor accepted, and summarise.

Each stage completes before the next starts: its manifest is then final, so the next stage's input list is
fixed and sorted, which makes runs reproducible across engines and restarts. A restarted run skips every
record a manifest already holds; a lock file keeps two runs from writing the same output folder.
"""
from __future__ import annotations

import fcntl
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from data_pipeline.config import AUDIO_STAGES, VIDEO_STAGES, DataPipelineConfig
from data_pipeline.engines import get_engine
from data_pipeline.manifest import Manifest, Record, dumps, pending
from ovi.fileio import atomic_write_text
from data_pipeline.sources import list_sources
from data_pipeline.stages import build_stage

log = logging.getLogger(__name__)


@contextmanager
def run_lock(output: Path) -> Iterator[None]:
    output.mkdir(parents=True, exist_ok=True)
    with open(output / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another run is writing {output}; wait for it or use another --output") from None
        yield  # the OS releases the lock when this process ends, even on SIGKILL


def manifest_path(output: Path, stage: str) -> Path:
    return output / "manifests" / f"{stage}.jsonl"


def stage_inputs(cfg: DataPipelineConfig, stage: str) -> list[Record]:
    """Sources for the first stage; otherwise the records the previous stage (of the full order) accepted."""
    order = VIDEO_STAGES if cfg.mode == "video" else AUDIO_STAGES
    i = order.index(stage)
    if i == 0:
        return list_sources(cfg.input, cfg.probe.extensions)
    prev = manifest_path(Path(cfg.output), order[i - 1])
    if not prev.exists():
        raise FileNotFoundError(f"stage {stage} reads {prev}, which does not exist; run stage {order[i - 1]} first")
    return Manifest(prev).accepted()


def run_pipeline(cfg: DataPipelineConfig) -> dict:
    """Run every configured stage; returns (and writes to ``{output}/summary.json``) the run summary."""
    if not cfg.output:
        raise ValueError("no output folder: pass --output or output=...")
    if not cfg.input and "probe" in cfg.stage_names:
        raise ValueError("no input: pass --input (a folder, a list file or a bucket URL) or input=...")
    output = Path(cfg.output)
    engine = get_engine(cfg.engine.name)
    summary: dict = {"mode": cfg.mode, "engine": cfg.engine.name, "stages": {}}
    with run_lock(output):
        from ovi.config import to_yaml

        atomic_write_text(output / "config.yaml", to_yaml(cfg))
        for name in cfg.stage_names:
            stage = build_stage(name, cfg)
            manifest = Manifest(manifest_path(output, name))
            inputs = stage_inputs(cfg, name)
            todo = pending(inputs, manifest)
            if not stage.enabled:
                log.warning("%s: skipped, its weights are not configured; %d records pass through unscored",
                            name, len(todo))
            log.info("%s: %d inputs, %d already done, %d to process", name, len(inputs), len(inputs) - len(todo),
                     len(todo))
            produced_before = sum(1 for _ in manifest.outputs())
            start = time.perf_counter()
            engine(name, cfg, todo, manifest)
            extra = stage.finalize(manifest.accepted())  # driver-side step (pack writes its shards)
            elapsed = time.perf_counter() - start
            produced = sum(1 for _ in manifest.outputs()) - produced_before
            stats = {
                "inputs": len(inputs),
                "processed": len(todo),
                "resumed": len(inputs) - len(todo),
                "outputs_this_run": produced,
                "accepted": len(manifest.accepted()),
                "rejected": manifest.rejected_counts(),
                "seconds": round(elapsed, 3),
                "inputs_per_s": round(len(todo) / elapsed, 4) if todo and elapsed > 0 else None,
                "outputs_per_s": round(produced / elapsed, 4) if produced and elapsed > 0 else None,
                "skipped": not stage.enabled,
                **extra,
            }
            summary["stages"][name] = stats
            log.info("%s: %d processed in %.1f s (%s in/s, %s out/s); accepted %d; rejected %s", name, len(todo),
                     elapsed, stats["inputs_per_s"], stats["outputs_per_s"], stats["accepted"], stats["rejected"])
        atomic_write_text(output / "summary.json", dumps(summary) + "\n")
    log.info("summary:\n%s", format_summary(summary))
    return summary


def format_summary(summary: dict) -> str:
    head = f"{'stage':<12}{'inputs':>8}{'done now':>10}{'accepted':>10}{'in/s':>9}{'out/s':>9}  rejected"
    lines = [head]
    for name, s in summary["stages"].items():
        rejected = ", ".join(f"{k}={v}" for k, v in s["rejected"].items()) or "-"
        if s["skipped"]:
            rejected += " (skipped: no weights)"
        rate = lambda v: f"{v:.2f}" if v else "-"  # noqa: E731
        lines.append(f"{name:<12}{s['inputs']:>8}{s['processed']:>10}{s['accepted']:>10}"
                     f"{rate(s['inputs_per_s']):>9}{rate(s['outputs_per_s']):>9}  {rejected}")
    return "\n".join(lines)


