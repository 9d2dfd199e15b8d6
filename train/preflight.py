"""Every input of a run checked before anything is built: seconds, not the minutes an 11B build takes.

Rank 0 checks the model and DeepSpeed configs, the init files (headers only, against a meta-device model), the
data folders (index, listed shards, null prompt), the encoder files for raw data, the checkpoint to resume,
the output folders' writability and the run-folder lock; the other ranks receive the verdict. Every problem is
one line naming the fix; all of them are reported at once.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch.distributed as dist

from data_pipeline.shards import read_index
from ovi.config import load_fusion_config
from train.checkpoint import checkpoint_meta, latest_checkpoint
from train.config import TrainConfig
from train.data.latents import load_null_prompt
from train.engine import deepspeed_config
from train.model_init import init_plans, meta_model, module_shapes
from train.run_lock import RunLock, RunLocked

log = logging.getLogger(__name__)


class PreflightError(RuntimeError):
    pass


@dataclass
class Preflight:
    """What the checks found that the trainer uses: the checkpoint to resume (if any) and its metadata."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    resume_from: Optional[Path] = None
    resume_meta: Optional[dict] = None

    def check(self, what: Callable[[], object], key: str = "") -> object:
        """Run one check; an exception becomes a problem line (its message names the fix), led by ``key``."""
        try:
            return what()
        except Exception as e:  # noqa: BLE001 - every failure is reported, not only the first
            line = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.problems.append(f"{key}: {line}" if key and not line.startswith(key) else line)
            return None


def _writable(folder: Path, key: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"{key}: cannot write to {folder} ({e.strerror}); choose a writable folder") from None


def _data(cfg: TrainConfig, pf: Preflight) -> None:
    for d in cfg.data.shards:
        index = pf.check(lambda d=d: read_index(d), "data.shards")
        if index is None:
            continue
        missing = [s.name for s in index.shards if not s.path.is_file()]
        empty = [s.name for s in index.shards if s.num_samples == 0]
        if len(missing) == len(index.shards):
            pf.problems.append(f"data.shards: none of the {len(missing)} shards listed in {index.root} exist; "
                               "re-run the pack stage or fix the path")
        elif missing:
            pf.warnings.append(f"{d}: {len(missing)} listed shard(s) missing (e.g. {missing[0]}); they will be "
                               "skipped and counted")
        if empty:
            pf.warnings.append(f"{d}: {len(empty)} shard(s) hold no samples (e.g. {empty[0]}); never drawn")
        if cfg.data.source == "precomputed":
            pf.check(lambda d=d: load_null_prompt(d, cfg.objective.null_prompt), "data.shards")
    if cfg.data.source == "raw" and cfg.encoders.kind == "ovi":
        needed = ["audio_vae", "text_encoder", "tokenizer"] + (["video_vae"] if cfg.has_video else [])
        for key in needed:
            path = getattr(cfg.encoders, key)
            if not path or not Path(path).exists():
                pf.problems.append(f"encoders.{key}: {path!r} not found; `ovi-download` fetches the released "
                                   "encoders, or precompute latents with train.precompute")


def _resume(cfg: TrainConfig, world: int, pf: Preflight) -> None:
    if not cfg.checkpoint.resume:
        return
    path = pf.check(lambda: latest_checkpoint(cfg.checkpoint_dir))
    if path is None:
        return
    meta = checkpoint_meta(path)
    slots = meta.get("slots", meta["world_size"] * cfg.engine.gradient_accumulation_steps)
    groups = world // max(cfg.engine.sp_size, 1)  # an SP group of ranks reads one slot at a time
    if slots % groups:
        pf.problems.append(f"{path} has {slots} data slots per step (data-parallel groups x accumulation); {groups} "
                           f"group(s) (ranks / engine.sp_size) do not divide it: resume with a divisor of {slots}")
        return
    pf.resume_from, pf.resume_meta = path, {**meta, "slots": slots}


def run_checks(cfg: TrainConfig, world: int, lock: Optional[RunLock]) -> Preflight:
    """All checks (rank 0). ``lock`` is acquired last, when everything else passed."""
    pf = Preflight()
    model_cfg = pf.check(lambda: load_fusion_config(cfg.model), "model")
    pf.check(lambda: deepspeed_config(cfg, world), "engine.deepspeed_config")
    if model_cfg is not None:
        pf.check(lambda: init_plans(cfg, module_shapes(meta_model(cfg, model_cfg))))
    _data(cfg, pf)
    pf.check(lambda: _writable(Path(cfg.run_dir), "run_dir"))
    pf.check(lambda: _writable(cfg.checkpoint_dir, "checkpoint.dir"))
    _resume(cfg, world, pf)
    if lock is not None and not pf.problems:
        try:
            lock.acquire()
        except RunLocked as e:
            pf.problems.append(str(e))
    return pf


def preflight(cfg: TrainConfig, rank: int, world: int, lock: Optional[RunLock]) -> Preflight:
    """Collective: rank 0 checks, every rank gets the result; raises PreflightError listing every problem."""
    pf = run_checks(cfg, world, lock) if rank == 0 else None
    if dist.is_initialized() and world > 1:
        box = [pf]
        dist.broadcast_object_list(box, src=0)
        pf = box[0]
    assert pf is not None
    if rank == 0:
        for w in pf.warnings:
            log.warning("%s", w)
    if pf.problems:
        raise PreflightError("the run cannot start:\n" + "\n".join(f"  - {p}" for p in pf.problems))
    if rank == 0:
        log.info("inputs checked: model, DeepSpeed config, init files, %d dataset(s), output folders, run lock%s",
                 len(cfg.data.shards), f"; resuming {pf.resume_from}" if pf.resume_from else "")
    return pf
