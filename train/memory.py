"""``ovi-train --dry-run``: check every input, build the model and the engine, report each rank's memory, exit.

What a lab runs before booking a cluster: the same preflight and the same build as training (under ZeRO-3,
``deepspeed.zero.Init`` and rank-0 reads of the init files), with the peak host memory (and GPU memory, where
there is one) each rank needed for it, next to the size of the model's parameters.

Host memory is the process's anonymous memory (tensors, optimizer state), sampled every few milliseconds:
the memory-mapped init files' pages also count as resident while they are read, but they are the kernel's page
cache (shared by every rank on a node and dropped under pressure), not a copy of the model.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from ovi.config import load_fusion_config
from ovi.parallel.groups import leave_process_group
from train.config import TrainConfig
from train.engine import build_engine, deepspeed_config, init_distributed, zero_stage
from train.model_init import build_model, meta_model
from train.params import apply_trainable
from train.preflight import preflight
from train.run_lock import RunLock

log = logging.getLogger(__name__)

STATUS = Path("/proc/self/status")


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", STATUS.read_text()).group(1))


class AnonPeak:
    """Peak growth of anonymous resident memory (``RssAnon``) inside a ``with`` block, sampled by a thread."""

    def __init__(self, every_s: float = 0.002):
        self.every_s = every_s
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    @staticmethod
    def now() -> int:
        return _status_kb("RssAnon") * 1024

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.every_s)

    def __enter__(self) -> "AnonPeak":
        self.base = self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())

    @property
    def added(self) -> int:
        return self.peak - self.base


@dataclass
class RankMemory:
    rank: int
    model_bytes: int  # all parameters of the stage's model in the training precision
    build_peak_bytes: int  # host memory the build and load added at its peak
    engine_peak_bytes: int  # the same through deepspeed.initialize (master weights, optimizer state)
    gpu_peak_bytes: int  # torch.cuda.max_memory_allocated, 0 on CPU

    def line(self) -> str:
        mb = 1 << 20
        return (f"rank {self.rank}: build peak +{self.build_peak_bytes / mb:.0f} MiB host "
                f"({self.build_peak_bytes / self.model_bytes:.2f} x the {self.model_bytes / mb:.0f} MiB model), "
                f"with engine +{self.engine_peak_bytes / mb:.0f} MiB, GPU peak {self.gpu_peak_bytes / mb:.0f} MiB")


def dry_run(cfg: TrainConfig) -> list[RankMemory]:
    """Collective. Returns every rank's figures on rank 0 (its own elsewhere) and logs them."""
    info = init_distributed(cfg.engine.dist_backend, cfg.engine.cpu_shm_comm)
    lock = RunLock(cfg.run_dir, cfg.checkpoint.lock_stale_s) if info.rank == 0 else None
    try:
        preflight(cfg, info.rank, info.world_size, lock)
        model_cfg = load_fusion_config(cfg.model)
        ds = deepspeed_config(cfg, info.world_size)
        dtype_bytes = 2 if cfg.engine.precision == "bf16" else 4
        model_bytes = sum(p.numel() for p in meta_model(cfg, model_cfg).parameters()) * dtype_bytes
        dist.barrier()
        with AnonPeak() as build:
            torch.manual_seed(cfg.seed)
            model = build_model(cfg, model_cfg, ds)
        with AnonPeak() as engine:
            apply_trainable(model, cfg.trainable, cfg.frozen)
            build_engine(model, cfg, info, ds)
        build_peak, engine_peak = build.added, engine.peak - build.base
        gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
        mine = RankMemory(info.rank, model_bytes, build_peak, engine_peak, gpu)
        everyone = [None] * info.world_size
        dist.all_gather_object(everyone, asdict(mine))
        out = [RankMemory(**m) for m in everyone]
        if info.rank == 0:
            log.info("dry run, ZeRO-%d on %d rank(s): inputs checked, model and engine built", zero_stage(ds),
                     info.world_size)
            for m in out:
                log.info("%s", m.line())
        leave_process_group()
        return out
    finally:
        if lock is not None:
            lock.release()
