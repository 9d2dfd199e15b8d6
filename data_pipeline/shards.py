"""The shard format, writer and reader in one place: the contract between the data pipeline and the trainer.

``{dataset}/shards/{prefix}-{NNNNNN}.tar``: standard webdataset tars; each sample is the contiguous group of
members ``<key>.<ext>`` (``json`` always; ``mp4`` or ``npy``, ``wav`` for raw clips; ``latents.safetensors`` for
precomputed latents); keys are clip ids without dots (webdataset's key ends at the first dot).
``{dataset}/shards/index.json`` (``ShardIndex``) lists the shards with their sample counts and sizes and is
written last, atomically: a folder with an index is complete.

Tars are byte-reproducible (fixed member order, zero mtimes and owners), so a resumed pipeline run writes
exactly the shards an uninterrupted run writes. Shard names are stable (``ShardLedger``): a written shard
keeps its samples; clips added by a later run go to new shards. The trainer reads tars with
``iter_tar_samples`` rather than webdataset's reader because it must restart at a sample offset inside a
shard (see train/data/stream.py).
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterable, Iterator, Optional, Sequence, Union

from data_pipeline.manifest import dumps
from ovi.fileio import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from data_pipeline.storage import Storage

INDEX_NAME = "index.json"
FORMAT_VERSION = "ovi-wds-1"
TAR_BLOCK = 512


# ---------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class StoredFile:
    """A member read at write time from a run's ``Storage`` (local folder or object store)."""

    storage: "Storage"
    rel: str

    def size(self) -> int:
        return self.storage.size(self.rel)

    def open(self) -> IO[bytes]:
        return self.storage.open_read(self.rel)


Member = Union[bytes, Path, StoredFile]


def _member_size(data: Member) -> int:
    if isinstance(data, bytes):
        return len(data)
    return data.size() if isinstance(data, StoredFile) else data.stat().st_size


@dataclass
class Sample:
    key: str
    members: dict[str, Member]  # extension -> bytes, or a file to read at write time
    meta: dict  # written as the <key>.json member

    def sizes(self) -> int:
        """Bytes this sample takes in a tar (headers and block padding included)."""
        return sum(TAR_BLOCK + -(-n // TAR_BLOCK) * TAR_BLOCK for n in self._member_sizes())

    def _member_sizes(self) -> Iterator[int]:
        yield len(dumps(self.meta).encode("utf-8"))
        for data in self.members.values():
            yield _member_size(data)


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
                size = _member_size(data)
                h.update(f"{ext}:{size}\0".encode())
        return h.hexdigest()


def plan_shards(samples: Sequence[Sample], prefix: str, samples_per_shard: int, max_bytes: int,
                first_number: int = 0) -> list[ShardPlan]:
    """Greedy, in the given order: a shard closes at ``samples_per_shard`` samples or before ``max_bytes``.
    Shards are numbered from ``first_number`` (an incremental run appends after the existing shards)."""
    shards: list[ShardPlan] = []
    current: ShardPlan | None = None
    for s in samples:
        size = s.sizes()
        if current is None or len(current.samples) >= samples_per_shard or (
                current.samples and current.num_bytes + size > max_bytes):
            current = ShardPlan(name=f"{prefix}-{first_number + len(shards):06d}.tar")
            shards.append(current)
        current.samples.append(s)
        current.num_bytes += size
    return shards


def _add_member(tar: tarfile.TarFile, name: str, data: Member) -> None:
    """Add ``data`` as ``name`` with zeroed times and owners, so equal content gives byte-identical tars.
    Files are streamed from disk or the object store, never held whole in memory."""
    info = tarfile.TarInfo(name)
    info.size = _member_size(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if isinstance(data, bytes):
        tar.addfile(info, io.BytesIO(data))
    else:
        with (data.open() if isinstance(data, StoredFile) else open(data, "rb")) as f:
            tar.addfile(info, f)


def _write_samples(fileobj: IO[bytes], samples: Iterable[Sample]) -> int:
    """Stream ``samples`` into a tar; returns how many were written."""
    count = 0
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for s in samples:
            if "." in s.key:
                raise ValueError(f"sample key {s.key!r} contains a dot; webdataset would split it (use '_')")
            members = {"json": dumps(s.meta).encode("utf-8"), **s.members}
            for ext in sorted(members):
                _add_member(tar, f"{s.key}.{ext}", members[ext])
            count += 1
    return count


def write_shard(path: Path, samples: ShardPlan | Iterable[Sample]) -> int:
    """Write one tar atomically, streaming (one sample in memory at a time); returns its size in bytes."""
    items = samples.samples if isinstance(samples, ShardPlan) else samples
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        _write_samples(f, items)
    return Path(path).stat().st_size


def index_entry(path: Path) -> dict:
    """``{"name", "num_samples", "num_bytes"}`` of a tar on disk (reads headers only)."""
    return {"name": path.name, "num_samples": count_samples(path), "num_bytes": path.stat().st_size}


def write_index(shard_dir: Path, entries: list[dict], kind: str) -> dict:
    """Atomically write ``index.json`` (written last: its presence means every listed shard is complete).

    ``entries``: ``{"name", "num_samples", "num_bytes"}`` per shard; ``kind``: "audio_video", "audio", "latents".
    """
    index = index_document(entries, kind)
    atomic_write_text(Path(shard_dir) / INDEX_NAME, index_text(index))
    return index


def index_text(index: dict) -> str:
    return json.dumps(index, indent=1, sort_keys=True) + "\n"


def index_document(entries: list[dict], kind: str) -> dict:
    """The ``index.json`` content for shard ``entries`` (``{"name", "num_samples", "num_bytes"}`` each)."""
    return {
        "format": FORMAT_VERSION,
        "kind": kind,
        "num_shards": len(entries),
        "num_samples": sum(e["num_samples"] for e in entries),
        "num_bytes": sum(e["num_bytes"] for e in entries),
        "shards": entries,
    }


class ShardLedger:
    """Which clips each written shard holds: ``{shards}/ledger/{name}.json`` = ``{"name", "keys",
    "num_samples", "num_bytes"}``, written by the shard's writer right after its tar.

    It makes shard names stable: a shard, once written, keeps its name and samples; clips added later go to
    new shards numbered after the last one, so a trainer's saved data position keeps its meaning. A tar
    without a ledger entry (a kill between the two writes) is planned and written again, identically.
    """

    def __init__(self, storage: "Storage", shard_dir: str = "shards") -> None:
        self.storage = storage
        self.shard_dir = shard_dir
        self.entries: dict[str, dict] = {}
        for rel in storage.list(f"{shard_dir}/ledger"):
            entry = json.loads(storage.read_bytes(rel))
            self.entries[entry["name"]] = entry

    def assigned(self) -> set[str]:
        return {k for e in self.entries.values() for k in e["keys"]}

    def next_number(self, prefix: str) -> int:
        numbers = [int(n[len(prefix) + 1:-len(".tar")]) for n in self.entries if n.startswith(prefix + "-")]
        return max(numbers, default=-1) + 1

    def index_entries(self) -> list[dict]:
        return [{k: e[k] for k in ("name", "num_samples", "num_bytes")} for _, e in sorted(self.entries.items())]


def write_shard_to(storage: "Storage", shard_dir: str, plan: ShardPlan) -> dict:
    """Write ``plan``'s tar into ``storage`` (streamed, atomic), then its ledger entry; returns the entry."""
    with storage.open_write(f"{shard_dir}/{plan.name}") as f:
        _write_samples(f, plan.samples)
    entry = {"name": plan.name, "keys": [s.key for s in plan.samples], "num_samples": len(plan.samples),
             "num_bytes": storage.size(f"{shard_dir}/{plan.name}")}
    storage.write_bytes(f"{shard_dir}/ledger/{plan.name}.json", (dumps(entry) + "\n").encode("utf-8"))
    return entry


# ---------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ShardInfo:
    name: str
    path: Path
    num_samples: int
    num_bytes: int


@dataclass(frozen=True)
class ShardIndex:
    """``index.json`` as read: the shards in order, with their sample counts."""

    root: Path  # the folder holding index.json and the tars
    kind: str
    shards: list[ShardInfo]

    @property
    def num_samples(self) -> int:
        return sum(s.num_samples for s in self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.num_bytes for s in self.shards)

    def urls(self) -> list[str]:
        """Shard paths, for ``webdataset.WebDataset``."""
        return [str(s.path) for s in self.shards]


def shards_dir(dataset: str | Path) -> Path:
    """The folder holding ``index.json``: ``dataset`` may name the dataset folder or its ``shards/`` folder."""
    d = Path(dataset)
    for cand in (d / "shards", d):
        if (cand / INDEX_NAME).is_file():
            return cand
    raise FileNotFoundError(f"no {INDEX_NAME} in {d} or {d / 'shards'}; point at a finished dataset folder "
                            "(the pipeline's pack stage or train.precompute writes the index last)")


def read_index(dataset: str | Path) -> ShardIndex:
    """Read and check ``index.json`` of a dataset folder (or its ``shards/`` folder)."""
    root = shards_dir(dataset)
    path = root / INDEX_NAME
    with open(path) as f:
        index = json.load(f)
    if not isinstance(index, dict):
        raise ValueError(f"{path}: expected a JSON object; write it with data_pipeline.shards.write_index")
    if index.get("format") != FORMAT_VERSION or not isinstance(index.get("shards"), list):
        raise ValueError(f"{path}: not a {FORMAT_VERSION} shard index (format {index.get('format')!r}); "
                         "write it with data_pipeline.shards.write_index")
    shards = []
    for e in index["shards"]:
        if not {"name", "num_samples", "num_bytes"} <= set(e):
            raise ValueError(f"{path}: shard entry {e} needs 'name', 'num_samples' and 'num_bytes'")
        shards.append(ShardInfo(e["name"], root / Path(e["name"]).name, int(e["num_samples"]), int(e["num_bytes"])))
    if not shards:
        raise ValueError(f"{path} lists no shards; the dataset is empty")
    return ShardIndex(root, str(index.get("kind", "")), shards)


def shard_urls(dataset: str | Path) -> list[str]:
    """Shard paths listed by the index, for ``webdataset.WebDataset``."""
    return read_index(dataset).urls()


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


def count_samples(path: Path) -> int:
    """Samples in a tar, from its member headers (no data is read)."""
    with tarfile.open(path, "r:") as tf:
        keys = [split_member_name(m.name)[0] for m in tf if m.isfile()]
    return sum(1 for i, k in enumerate(keys) if i == 0 or k != keys[i - 1])
