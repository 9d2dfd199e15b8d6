"""A resumable per-rank stream of raw samples over the shards of one or more datasets.

Each rank draws shards *with replacement* from its own seeded sequence (so every rank yields the same number
of samples however many shards there are, and no rank waits at an epoch end), keeps ``interleave`` shards
open and takes each next sample from one of them chosen by a seeded draw. Every random choice is a pure
function of (seed, rank, counter), so the stream's whole position is a few integers: ``ShardStream.state``.
A shard that cannot be read (missing, truncated, not a tar) or that yields no sample is logged, counted and
never drawn again: its id joins ``state["bad"]``, so a resumed run makes the same draws. Samples read before a
truncation point are kept. The shard format itself (index, tar members, the reader that can start mid-shard) is data_pipeline/shards.py.
"""
from __future__ import annotations

import json
import logging
import random
import tarfile
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

from data_pipeline.shards import ShardIndex, iter_tar_samples

log = logging.getLogger(__name__)

# What a damaged or missing tar raises while it is opened or read.
SHARD_ERRORS = (OSError, EOFError, tarfile.TarError, ValueError)


@dataclass
class RawSample:
    key: str
    files: dict[str, bytes]
    index: int  # position in this rank's stream (seeds per-sample randomness such as crops)
    shard: str  # the tar it came from (for error messages)
    state_after: dict  # ShardStream.state once this sample is consumed


def _rng(seed: int, rank: int, what: str, n: int) -> random.Random:
    # String seeds are hashed with SHA-512: stable across processes and Python runs.
    return random.Random(f"{seed}/{rank}/{what}/{n}")


class ShardStream:
    """Infinite, deterministic, resumable stream of raw samples for one rank."""

    def __init__(
        self,
        datasets: Sequence[ShardIndex],
        weights: Optional[Sequence[float]],
        seed: int,
        rank: int,
        interleave: int,
        state: Optional[dict] = None,
    ):
        self.shards = [s for d in datasets for s in d.shards]
        if weights is None:
            shard_w = [float(s.num_samples) for s in self.shards]
        else:
            shard_w = []
            for d, w in zip(datasets, weights, strict=True):
                total = d.num_samples
                shard_w += [w * s.num_samples / total if total else 0.0 for s in d.shards]
        if sum(shard_w) <= 0:
            raise ValueError("the datasets hold no samples (all num_samples are 0)")
        self.weights = shard_w
        self.seed, self.rank, self.interleave = seed, rank, interleave
        # slots: [shard draw number, shard id, samples consumed from it]; a slot with no shard is refilled.
        self.state = state or {"draws": 0, "picks": 0, "slots": [None] * interleave, "bad": []}
        self.state.setdefault("bad", [])  # positions saved before unreadable shards were tracked
        if len(self.state["slots"]) != interleave:
            raise ValueError(
                f"data position has {len(self.state['slots'])} interleave slots but data.interleave={interleave}; "
                "resume with the interleave the run started with"
            )

    def _draw(self) -> list[int]:
        d = self.state["draws"]
        bad = set(self.state["bad"])
        weights = [0.0 if i in bad else w for i, w in enumerate(self.weights)]
        if sum(weights) <= 0:
            raise RuntimeError(f"every shard is unreadable or empty ({len(bad)} of them, logged above); "
                               "check the dataset folders in data.shards")
        shard = _rng(self.seed, self.rank, "draw", d).choices(range(len(self.shards)), weights=weights)[0]
        self.state["draws"] = d + 1
        return [d, shard, 0]

    @property
    def bad_shards(self) -> int:
        return len(self.state["bad"])

    def _mark_bad(self, shard: int, why: str) -> None:
        log.warning("skipping shard %s (rank %d): %s", self.shards[shard].path, self.rank, why)
        if shard not in self.state["bad"]:
            self.state["bad"].append(shard)

    def _next(self, readers: list[Optional[Iterator]], slot: int) -> Optional[tuple[str, dict[str, bytes]]]:
        """The slot's next sample, or None when its shard is exhausted or unreadable."""
        _, shard, offset = self.state["slots"][slot]
        try:
            if readers[slot] is None:
                readers[slot] = iter_tar_samples(self.shards[shard].path, skip=offset)
            item = next(readers[slot], None)  # type: ignore[arg-type]
        except SHARD_ERRORS as e:
            self._mark_bad(shard, f"unreadable after {offset} sample(s): {type(e).__name__}: {e}")
            return None
        listed = self.shards[shard].num_samples
        if item is None and offset < listed:  # tar readers stop quietly at a cut inside a header
            self._mark_bad(shard, f"it ended after {offset} of the {listed} samples its index lists (truncated?)")
        return item

    def __iter__(self) -> Iterator[RawSample]:
        readers: list[Optional[Iterator]] = [None] * self.interleave
        while True:
            slot = _rng(self.seed, self.rank, "pick", self.state["picks"]).randrange(self.interleave)
            while True:
                if self.state["slots"][slot] is None:
                    self.state["slots"][slot] = self._draw()
                    readers[slot] = None
                item = self._next(readers, slot)
                if item is not None:
                    break
                self.state["slots"][slot] = None  # shard exhausted or unreadable: draw another
            shard = self.state["slots"][slot][1]
            self.state["slots"][slot][2] += 1
            index = self.state["picks"]
            self.state["picks"] += 1
            key, files = item
            yield RawSample(key, files, index, str(self.shards[shard].path), json.loads(json.dumps(self.state)))
