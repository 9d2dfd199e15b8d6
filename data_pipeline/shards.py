"""Webdataset shard writing and reading: the contract with the trainer (see data_pipeline/README.md).

``{output}/shards/{prefix}-{NNNNNN}.tar``: each sample is the contiguous group of members ``<key>.json``,
``<key>.mp4`` (or ``<key>.npy``), ``<key>.wav``; keys are clip ids without dots. ``index.json`` lists the shards
with their sample counts and totals and is written last, atomically: a folder with an index is complete.

Tars are byte-reproducible (sorted samples, fixed member order, zero mtimes and owners), so a resumed run
writes exactly the shards an uninterrupted run writes, and a shard already on disk with the planned content
digest is not written again.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from data_pipeline.manifest import dumps
from ovi.fileio import atomic_write_bytes, atomic_write_text

INDEX_NAME = "index.json"
FORMAT_VERSION = "ovi-wds-1"
TAR_BLOCK = 512


@dataclass
class Sample:
    key: str
    members: dict[str, bytes | Path]  # extension -> bytes, or a file to read at write time
    meta: dict

    def sizes(self) -> int:
        total = 0
        for data in self._materialized_sizes():
            total += TAR_BLOCK + -(-data // TAR_BLOCK) * TAR_BLOCK
        return total

    def _materialized_sizes(self) -> Iterator[int]:
        yield len(dumps(self.meta).encode("utf-8"))
        for data in self.members.values():
            yield len(data) if isinstance(data, bytes) else data.stat().st_size


@dataclass
class ShardPlan:
    name: str
    samples: list[Sample] = field(default_factory=list)
    num_bytes: int = 0

    def digest(self) -> str:
        """Content digest of the shard-to-be: keys, metadata and member sizes."""
        h = hashlib.sha256()
        for s in self.samples:
            h.update(s.key.encode() + b"\0" + dumps(s.meta).encode() + b"\0")
            for ext, data in sorted(s.members.items()):
                size = len(data) if isinstance(data, bytes) else data.stat().st_size
                h.update(f"{ext}:{size}\0".encode())
        return h.hexdigest()


def plan_shards(samples: Sequence[Sample], prefix: str, samples_per_shard: int, max_bytes: int) -> list[ShardPlan]:
    """Greedy, in the given order: a shard closes at ``samples_per_shard`` samples or before ``max_bytes``."""
    shards: list[ShardPlan] = []
    current: ShardPlan | None = None
    for s in samples:
        size = s.sizes()
        if current is None or len(current.samples) >= samples_per_shard or (
                current.samples and current.num_bytes + size > max_bytes):
            current = ShardPlan(name=f"{prefix}-{len(shards):06d}.tar")
            shards.append(current)
        current.samples.append(s)
        current.num_bytes += size
    return shards


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add ``data`` as ``name`` with zeroed times and owners, so equal content gives byte-identical tars."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, plan: ShardPlan) -> int:
    """Write one tar atomically; returns its size in bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for s in plan.samples:
            if "." in s.key:
                raise ValueError(f"sample key {s.key!r} contains a dot; webdataset would split it")
            members = {"json": dumps(s.meta).encode("utf-8"), **s.members}
            for ext in sorted(members):
                data = members[ext]
                add_tar_member(tar, f"{s.key}.{ext}", data if isinstance(data, bytes) else data.read_bytes())
    atomic_write_bytes(path, buf.getvalue())
    return len(buf.getvalue())


def write_index(shard_dir: Path, entries: list[dict], kind: str) -> dict:
    """Atomically write ``index.json`` (written last: its presence means every listed shard is complete).

    ``entries``: ``{"name", "num_samples", "num_bytes"}`` per shard. The trainer reads ``name``/``num_samples``.
    """
    index = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "num_shards": len(entries),
        "num_samples": sum(e["num_samples"] for e in entries),
        "num_bytes": sum(e["num_bytes"] for e in entries),
        "shards": entries,
    }
    atomic_write_text(shard_dir / INDEX_NAME, json.dumps(index, indent=1, sort_keys=True) + "\n")
    return index


class ShardState:
    """Which shards are on disk with which digest (``manifests/pack_shards.jsonl``, last line wins)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict] = {}
        if path.exists():
            lines = path.read_text().splitlines()
            for i, line in enumerate(lines):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    if i == len(lines) - 1:
                        continue  # torn by a kill mid-append: that shard is simply written again
                    raise ValueError(f"{path}: line {i + 1} is corrupt; delete the file to rewrite all shards")
                self.entries[entry["name"]] = entry

    def is_current(self, shard_dir: Path, plan: ShardPlan, digest: str) -> bool:
        entry = self.entries.get(plan.name)
        return bool(entry and entry["digest"] == digest and (shard_dir / plan.name).is_file())

    def record(self, entry: dict) -> None:
        import os

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries[entry["name"]] = entry


def read_index(shard_dir: Path) -> dict:
    with open(Path(shard_dir) / INDEX_NAME) as f:
        return json.load(f)


def shard_urls(shard_dir: Path) -> list[str]:
    """Shard paths listed by the index, for ``webdataset.WebDataset``."""
    return [str(Path(shard_dir) / e["name"]) for e in read_index(shard_dir)["shards"]]
