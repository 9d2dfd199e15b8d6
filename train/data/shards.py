"""Webdataset shards: the index, a tar reader that can start mid-shard, and a resumable per-rank stream.

Dataset layout (written by the data pipeline and by ``train.precompute``)::

    {dataset}/shards/{prefix}-{NNNNNN}.tar      members "<key>.<ext>", grouped by key (no dots in keys)
    {dataset}/shards/index.json                 {"shards": [{"name": "<file>.tar", "num_samples": N}, ...]}

Each rank draws shards *with replacement* from its own seeded sequence (so every rank yields the same number
of samples however many shards there are, and no rank waits at an epoch end), keeps ``interleave`` shards
open and takes each next sample from one of them chosen by a seeded draw. Every random choice is a pure
function of (seed, rank, counter), so the stream's whole position is a few integers: ``ShardStream.state``.

Why ``tarfile`` and not webdataset's reader: webdataset pipelines stream and cannot restart at a sample
offset (and its resampling is not reproducible across restarts), while an exact resume needs the data
position as checkpointable state. The files stay standard webdataset tars (the data pipeline writes and
tests them with webdataset).
"""
from __future__ import annotations

import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from data_pipeline.shards import INDEX_NAME



@dataclass(frozen=True)
class ShardInfo:
    path: Path
    num_samples: int


def shards_dir(dataset: str | Path) -> Path:
    """``dataset`` may name the dataset folder or its ``shards/`` folder."""
    d = Path(dataset)
    for cand in (d / "shards", d):
        if (cand / INDEX_NAME).is_file():
            return cand
    raise FileNotFoundError(f"no {INDEX_NAME} in {d} or {d / 'shards'}; point data.shards at a dataset folder")


def read_index(dataset: str | Path) -> list[ShardInfo]:
    root = shards_dir(dataset)
    with open(root / INDEX_NAME) as f:
        index = json.load(f)
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise ValueError(f"{root / INDEX_NAME}: expected {{'shards': [{{'name': ..., 'num_samples': ...}}]}}")
    out = []
    for entry in index["shards"]:
        name = entry.get("name", entry.get("path"))
        if name is None or "num_samples" not in entry:
            raise ValueError(f"{root / INDEX_NAME}: shard entry {entry} needs 'name' (or 'path') and 'num_samples'")
        out.append(ShardInfo(path=root / Path(name).name, num_samples=int(entry["num_samples"])))
    if not out:
        raise ValueError(f"{root / INDEX_NAME} lists no shards")
    return out


def split_member_name(name: str) -> tuple[str, str]:
    """'dir/clip_01.latents.safetensors' -> ('dir/clip_01', 'latents.safetensors') (key ends at the first dot)."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot:
        raise ValueError(f"tar member {name!r} has no extension")
    return (f"{head}/{stem}" if head else stem), ext


def iter_tar_samples(path: Path, skip: int = 0) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {ext: bytes}) per sample in tar order, after skipping ``skip`` samples (headers only)."""
    with tarfile.open(path, "r:") as tf:
        key: Optional[str] = None
        files: dict[str, bytes] = {}
        seen = 0
        for member in tf:
            if not member.isfile():
                continue
            k, ext = split_member_name(member.name)
            if k != key:
                if key is not None:
                    if seen >= skip:
                        yield key, files
                    seen += 1
                key, files = k, {}
            if seen >= skip:  # skipped samples: the tar reader seeks over their data
                files[ext] = tf.extractfile(member).read()  # type: ignore[union-attr]
        if key is not None and seen >= skip:
            yield key, files


@dataclass
class RawSample:
    key: str
    files: dict[str, bytes]
    index: int  # position in this rank's stream (seeds per-sample randomness such as crops)
    state_after: dict  # ShardStream.state once this sample is consumed


def _rng(seed: int, rank: int, what: str, n: int) -> random.Random:
    # String seeds are hashed with SHA-512: stable across processes and Python runs.
    return random.Random(f"{seed}/{rank}/{what}/{n}")


class ShardStream:
    """Infinite, deterministic, resumable stream of raw samples for one rank."""

    def __init__(
        self,
        datasets: Sequence[Sequence[ShardInfo]],
        weights: Optional[Sequence[float]],
        seed: int,
        rank: int,
        interleave: int,
        state: Optional[dict] = None,
    ):
        self.shards = [s for d in datasets for s in d]
        if weights is None:
            shard_w = [float(s.num_samples) for s in self.shards]
        else:
            shard_w = []
            for d, w in zip(datasets, weights, strict=True):
                total = sum(s.num_samples for s in d)
                shard_w += [w * s.num_samples / total if total else 0.0 for s in d]
        if sum(shard_w) <= 0:
            raise ValueError("the datasets hold no samples (all num_samples are 0)")
        self.weights = shard_w
        self.seed, self.rank, self.interleave = seed, rank, interleave
        # slots: [shard draw number, shard id, samples consumed from it]; a slot with no shard is refilled.
        self.state = state or {"draws": 0, "picks": 0, "slots": [None] * interleave}
        if len(self.state["slots"]) != interleave:
            raise ValueError(
                f"data position has {len(self.state['slots'])} interleave slots but data.interleave={interleave}; "
                "resume with the interleave the run started with"
            )

    def _draw(self) -> list[int]:
        d = self.state["draws"]
        shard = _rng(self.seed, self.rank, "draw", d).choices(range(len(self.shards)), weights=self.weights)[0]
        self.state["draws"] = d + 1
        return [d, shard, 0]

    def __iter__(self) -> Iterator[RawSample]:
        readers: list[Optional[Iterator]] = [None] * self.interleave
        while True:
            slot = _rng(self.seed, self.rank, "pick", self.state["picks"]).randrange(self.interleave)
            empty_draws = 0
            while True:
                if self.state["slots"][slot] is None:
                    self.state["slots"][slot] = self._draw()
                    readers[slot] = None
                _, shard, offset = self.state["slots"][slot]
                if readers[slot] is None:
                    readers[slot] = iter_tar_samples(self.shards[shard].path, skip=offset)
                item = next(readers[slot], None)  # type: ignore[arg-type]
                if item is not None:
                    break
                self.state["slots"][slot] = None  # shard exhausted: draw another
                empty_draws += 1
                if empty_draws > 100 * len(self.shards):
                    raise RuntimeError(f"no samples found after {empty_draws} shard draws; are the tar files empty?")
            self.state["slots"][slot][2] += 1
            index = self.state["picks"]
            self.state["picks"] += 1
            key, files = item
            yield RawSample(key, files, index, json.loads(json.dumps(self.state)))
