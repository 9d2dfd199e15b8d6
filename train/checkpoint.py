"""Atomic, resumable training checkpoints.

Layout of ``checkpoint_dir``::

    step_000100/                     DeepSpeed files (model, ZeRO optimizer shards, lr schedule)
        trainer_rank00000.pt ...      per rank: data position and RNG states
        trainer.json                  step, world size, stage (written last, before the commit)
    latest                            the committed checkpoint's directory name
    .tmp-step_000200/                 a save in progress (ignored, removed at the next start)

A save writes everything into ``.tmp-<tag>/``, fsyncs, then rank 0 renames it to ``<tag>/`` and atomically
replaces ``latest``. A process killed at any point leaves ``latest`` naming a complete checkpoint. The folder
must be on a filesystem every rank sees (shared across nodes).
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

from ovi.fileio import atomic_write_text, fsync_dir

log = logging.getLogger(__name__)

LATEST = "latest"
TMP_PREFIX = ".tmp-"
TRAINER_META = "trainer.json"


def step_tag(step: int) -> str:
    return f"step_{step:06d}"


def rank_file(rank: int) -> str:
    return f"trainer_rank{rank:05d}.pt"


@dataclass
class TrainerState:
    """What DeepSpeed does not save: the step, this rank's data position and RNG states."""

    step: int
    data_state: dict
    objective_rng: torch.Tensor
    torch_rng: torch.Tensor
    cuda_rng: Optional[list[torch.Tensor]]
    numpy_rng: tuple
    python_rng: tuple

    @classmethod
    def capture(cls, step: int, data_state: dict, objective_rng: torch.Generator) -> "TrainerState":
        return cls(
            step=step,
            data_state=data_state,
            objective_rng=objective_rng.get_state(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            numpy_rng=np.random.get_state(),
            python_rng=random.getstate(),
        )

    def restore_rng(self, objective_rng: torch.Generator) -> None:
        objective_rng.set_state(self.objective_rng)
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda_rng)
        np.random.set_state(self.numpy_rng)
        random.setstate(self.python_rng)


def _fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(root))


def latest_checkpoint(ckpt_dir: Path) -> Optional[Path]:
    """The committed checkpoint ``latest`` names, or None for a fresh run."""
    pointer = ckpt_dir / LATEST
    if not pointer.is_file():
        return None
    path = ckpt_dir / pointer.read_text().strip()
    if not (path / TRAINER_META).is_file():
        raise RuntimeError(f"{pointer} names {path}, which is incomplete; remove it or point 'latest' elsewhere")
    return path


class Checkpointer:
    def __init__(self, ckpt_dir: Path, rank: int, world_size: int, keep_last: int):
        self.dir, self.rank, self.world = Path(ckpt_dir), rank, world_size
        self.keep_last = keep_last

    def clean_partial(self) -> None:
        """Remove saves that a killed run left half-written (rank 0, before anyone saves)."""
        if self.rank == 0 and self.dir.is_dir():
            for p in self.dir.glob(TMP_PREFIX + "*"):
                log.warning("removing incomplete checkpoint %s", p)
                shutil.rmtree(p)
        dist.barrier()

    def save(
        self,
        engine,
        state: TrainerState,
        meta: dict,
        before_commit: Optional[Callable[[], None]] = None,
    ) -> Path:
        """Collective: every rank calls it. Returns the committed checkpoint folder."""
        tag = step_tag(state.step)
        tmp_tag = TMP_PREFIX + tag
        self.dir.mkdir(parents=True, exist_ok=True)
        engine.save_checkpoint(str(self.dir), tag=tmp_tag, save_latest=False)
        tmp = self.dir / tmp_tag
        torch.save(state.__dict__, tmp / rank_file(self.rank))
        dist.barrier()
        if before_commit is not None:
            before_commit()
        final = self.dir / tag
        if self.rank == 0:
            _fsync_tree(tmp)  # every rank's files are complete after the barrier
            atomic_write_text(tmp / TRAINER_META, json.dumps({**meta, "step": state.step, "world_size": self.world}))
            if final.exists():  # re-saving a step (e.g. a resumed run that finished): replace the old copy
                shutil.rmtree(final)
            tmp.rename(final)
            fsync_dir(self.dir)
            atomic_write_text(self.dir / LATEST, tag)
            self._prune(keep=final)
        dist.barrier()
        return final

    def _prune(self, keep: Path) -> None:
        done = sorted(p for p in self.dir.glob("step_*") if (p / TRAINER_META).is_file())
        for p in done[: max(0, len(done) - self.keep_last)]:
            if p != keep:
                shutil.rmtree(p)

    def load(self, engine, path: Path) -> TrainerState:
        """Collective. Restores the engine (weights, optimizer, schedule) and returns this rank's state."""
        meta = json.loads((path / TRAINER_META).read_text())
        if meta["world_size"] != self.world:
            raise RuntimeError(
                f"{path} was written by {meta['world_size']} ranks; this run has {self.world}. Resume with "
                f"{meta['world_size']} ranks (the data position is per rank), or export it and start a new run "
                "from the export via init.*"
            )
        loaded, _ = engine.load_checkpoint(str(self.dir), tag=path.name)
        if loaded is None:
            raise RuntimeError(f"DeepSpeed could not load {path}")
        fields = torch.load(path / rank_file(self.rank), weights_only=False)
        return TrainerState(**fields)
