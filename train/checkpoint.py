"""Atomic, resumable training checkpoints.

Layout of ``checkpoint_dir``::

    step_000100/                     DeepSpeed files (model, ZeRO optimizer shards, lr schedule)
        trainer_rank00000.pt ...      per rank: its global RNG states
        trainer_slot00000.pt ...      per data slot: data position and objective RNG (see below)
        trainer.json                  step, world size, slots, stage, every file's size (written last)
        universal/                    made on demand: the DeepSpeed universal form, for another world size
    latest                            the committed checkpoint's directory name
    .tmp-step_000200/                 a save in progress (ignored, removed at the next start)

A save writes everything into ``.tmp-<tag>/``, fsyncs, then rank 0 renames it to ``<tag>/`` and atomically
replaces ``latest``. A process killed at any point leaves ``latest`` naming a complete checkpoint. The folder
must be on a filesystem every rank sees (shared across nodes). A committed checkpoint whose files do not match
the sizes recorded in ``trainer.json`` (truncated, deleted) is skipped with a warning and the newest intact one
is used instead (``latest_checkpoint``).

Data slots make resume elastic: a step is ``slots`` micro-batches (world size x accumulation at the run's start),
slot ``s`` always reads its own data stream with its own objective RNG, and rank ``r`` serves slots
``r*A .. r*A+A-1``. On another world size the accumulation becomes ``slots / world``, so every step sees the
same samples and noise as before; the ZeRO partitions are re-cut through DeepSpeed's universal checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
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


UNIVERSAL = "universal"
# DeepSpeed's ds_to_universal needs this client state in a ZeRO-1/2 checkpoint (Megatron writes it).
UNIVERSAL_INFO = {"universal_checkpoint_info": {"universal_checkpoint_version": 0.2}}


def rank_file(rank: int) -> str:
    return f"trainer_rank{rank:05d}.pt"


def slot_file(slot: int) -> str:
    return f"trainer_slot{slot:05d}.pt"


def rank_slots(rank: int, accumulation: int) -> list[int]:
    """The data slots rank ``rank`` serves, in micro-step order."""
    return list(range(rank * accumulation, (rank + 1) * accumulation))


@dataclass
class SlotState:
    """One data slot: its stream position and the objective RNG that noises its samples."""

    data_state: Optional[dict]
    objective_rng: torch.Tensor


@dataclass
class TrainerState:
    """What DeepSpeed does not save: the step, this rank's slots and its global RNG states."""

    step: int
    slots: dict[int, SlotState]
    torch_rng: Optional[torch.Tensor]  # None: another world size and no such rank before (keep the fresh seed)
    cuda_rng: Optional[list[torch.Tensor]]
    numpy_rng: Optional[tuple]
    python_rng: Optional[tuple]

    @classmethod
    def capture(cls, step: int, slots: dict[int, tuple[Optional[dict], torch.Generator]]) -> "TrainerState":
        """``slots``: slot -> (data position, objective generator)."""
        return cls(
            step=step,
            slots={s: SlotState(d, g.get_state()) for s, (d, g) in slots.items()},
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            numpy_rng=np.random.get_state(),
            python_rng=random.getstate(),
        )

    def restore_rng(self, objective_rngs: dict[int, torch.Generator]) -> None:
        for s, g in objective_rngs.items():
            g.set_state(self.slots[s].objective_rng)
        if self.torch_rng is None:
            return
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


def _manifest(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def checkpoint_problem(path: Path) -> Optional[str]:
    """Why ``path`` is not a complete checkpoint (missing or truncated files), or None when it is."""
    try:
        meta = json.loads((path / TRAINER_META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        return f"{TRAINER_META} unreadable ({type(e).__name__})"
    for name, size in meta.get("files", {}).items():  # checkpoints before the manifest: trainer.json only
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, {size} were written"
    return None


def latest_checkpoint(ckpt_dir: Path) -> Optional[Path]:
    """The newest intact committed checkpoint (``latest`` first), or None for a fresh run.

    A damaged newest checkpoint is skipped with a warning; the run then repeats the steps after the one used.
    """
    ckpt_dir = Path(ckpt_dir)
    pointer = ckpt_dir / LATEST
    named = ckpt_dir / pointer.read_text().strip() if pointer.is_file() else None
    others = sorted((p for p in ckpt_dir.glob("step_*") if p.is_dir() and p != named), reverse=True)
    candidates = ([named] if named is not None else []) + others
    problems = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            if problems:
                log.warning("falling back to checkpoint %s; newer ones are damaged: %s", path, "; ".join(problems))
            return path
        problems.append(f"{path.name}: {problem}")
    if problems or named is not None:
        raise RuntimeError(f"no intact checkpoint in {ckpt_dir} ({'; '.join(problems) or 'latest names nothing'}); "
                           "restore one, or set checkpoint.resume=false / a new checkpoint.dir to start afresh")
    return None


def checkpoint_meta(path: Path) -> dict:
    return json.loads((path / TRAINER_META).read_text())


def to_universal(path: Path) -> Path:
    """Convert a ZeRO checkpoint to DeepSpeed's universal form (once; rank 0) so another world size loads it."""
    out = path / UNIVERSAL
    if not (out / "done").is_file():
        shutil.rmtree(out, ignore_errors=True)
        tmp = path / (TMP_PREFIX + UNIVERSAL)
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(path),
               "--output_folder", str(tmp), "--num_extract_workers", "1", "--num_merge_workers", "1"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"converting {path} for another world size failed; resume with "
                               f"{checkpoint_meta(path)['world_size']} ranks instead:\n{done.stderr[-2000:]}")
        (tmp / "done").write_text("ok")
        tmp.rename(out)
    return out


class Checkpointer:
    def __init__(self, ckpt_dir: Path, rank: int, world_size: int, keep_last: int, save_frozen: bool = True):
        self.dir, self.rank, self.world = Path(ckpt_dir), rank, world_size
        self.keep_last = keep_last
        self.save_frozen = save_frozen
        self.last_save: dict[str, float] = {}  # rank 0: the latest save's seconds and size

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
        rank_files: Optional[dict[str, object]] = None,
    ) -> Path:
        """Collective: every rank calls it. Returns the committed checkpoint folder. ``rank_files``: this rank's
        further files (name -> object for torch.save, e.g. its EMA share), committed with the rest."""
        t0 = time.perf_counter()
        tag = step_tag(state.step)
        tmp_tag = TMP_PREFIX + tag
        self.dir.mkdir(parents=True, exist_ok=True)
        extra = {} if self.save_frozen else {"exclude_frozen_parameters": True}
        engine.save_checkpoint(str(self.dir), tag=tmp_tag, save_latest=False, client_state=UNIVERSAL_INFO, **extra)
        tmp = self.dir / tmp_tag
        for s, slot in state.slots.items():
            torch.save(slot.__dict__, tmp / slot_file(s))
        rng = {k: v for k, v in state.__dict__.items() if k != "slots"}
        torch.save(rng, tmp / rank_file(self.rank))
        for name, obj in (rank_files or {}).items():
            torch.save(obj, tmp / name)
        dist.barrier()
        if before_commit is not None:
            before_commit()
        final = self.dir / tag
        if self.rank == 0:
            _fsync_tree(tmp)  # every rank's files are complete after the barrier
            files = _manifest(tmp)
            meta = {**meta, "step": state.step, "world_size": self.world, "save_frozen": self.save_frozen,
                    "files": files}
            atomic_write_text(tmp / TRAINER_META, json.dumps(meta))
            if final.exists():  # re-saving a step (e.g. a resumed run that finished): replace the old copy
                shutil.rmtree(final)
            tmp.rename(final)
            fsync_dir(self.dir)
            atomic_write_text(self.dir / LATEST, tag)
            self._prune(keep=final)
            self.last_save = {"checkpoint_s": time.perf_counter() - t0, "checkpoint_gb": sum(files.values()) / 1e9}
            log.info("saved checkpoint %s: %.3f GB in %.1f s", final, self.last_save["checkpoint_gb"],
                     self.last_save["checkpoint_s"])
        dist.barrier()
        return final

    def _prune(self, keep: Path) -> None:
        done = sorted(p for p in self.dir.glob("step_*") if (p / TRAINER_META).is_file())
        for p in done[: max(0, len(done) - self.keep_last)]:
            if p != keep:
                shutil.rmtree(p)

    def load(self, engine, path: Path, slots: list[int]) -> TrainerState:
        """Collective. Restores the engine (weights, optimizer, schedule) and returns this rank's state.

        On another world size the engine must have been built with ``load_universal`` (``needs_universal``).
        """
        meta = checkpoint_meta(path)
        strict = meta.get("save_frozen", True)  # frozen weights left out: they stay as built from init.*
        if needs_universal(path, self.world):
            if self.rank == 0:
                to_universal(path)
            dist.barrier()
            loaded, _ = engine.load_checkpoint(str(path), tag=UNIVERSAL, load_module_strict=strict)
        else:
            loaded, _ = engine.load_checkpoint(str(self.dir), tag=path.name, load_module_strict=strict)
        if loaded is None:
            raise RuntimeError(f"DeepSpeed could not load {path}")
        missing = [s for s in slots if not (path / slot_file(s)).is_file()]
        if missing:
            raise RuntimeError(f"{path} has no data slot(s) {missing}: it was written with {meta.get('slots')} slots; "
                               "set engine.gradient_accumulation_steps so that world size x accumulation equals that")
        rng_path = path / rank_file(self.rank)
        rng = torch.load(rng_path, weights_only=False) if rng_path.is_file() else {}
        if meta["world_size"] != self.world:
            rng = {}  # another rank layout: each rank keeps its fresh seed; slots carry the objective RNG
        return TrainerState(
            step=meta["step"],
            slots={s: SlotState(**torch.load(path / slot_file(s), weights_only=False)) for s in slots},
            torch_rng=rng.get("torch_rng"),
            cuda_rng=rng.get("cuda_rng"),
            numpy_rng=rng.get("numpy_rng"),
            python_rng=rng.get("python_rng"),
        )


def needs_universal(path: Path, world: int) -> bool:
    """A ZeRO checkpoint (partitioned optimizer) written by another number of ranks."""
    return checkpoint_meta(path)["world_size"] != world and any(path.glob("*optim_states.pt"))
