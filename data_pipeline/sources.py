"""Where raw files come from: a local folder, a text file listing paths/URLs, or a bucket through fsspec.

Each source gets a stable id made of its readable name and a hash of its location, so two files called
``a.mp4`` in different folders never collide, and re-listing the same input gives the same ids (resume relies
on it). Ids contain only ``[A-Za-z0-9_-]``: webdataset splits sample keys at the first dot.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from data_pipeline.manifest import Record
from data_pipeline.storage import is_url

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
ID_HASH_CHARS = 10
ID_NAME_CHARS = 40
# Files that accompany media (captions, notes) and are not inputs themselves: not counted as skipped.
SIDECAR_SUFFIXES = (".json", ".txt", ".srt", ".vtt", ".md")


def source_id(location: str) -> str:
    stem = _UNSAFE.sub("-", Path(location.rstrip("/")).stem).strip("-")[:ID_NAME_CHARS] or "src"
    digest = hashlib.sha1(location.encode("utf-8")).hexdigest()[:ID_HASH_CHARS]
    return f"{stem}_{digest}"


def list_sources(input_spec: str, extensions: Sequence[str]) -> list[Record]:
    """One record per raw file: ``{"id", "source"}``, where source is relative to a local input folder (so
    manifests do not depend on where the folder is mounted) or the full path/URL otherwise. Sorted by id."""
    return list_inputs(input_spec, extensions)[0]


def list_inputs(input_spec: str, extensions: Sequence[str]) -> tuple[list[Record], dict[str, int]]:
    """``list_sources`` plus the count of files skipped per extension (listed, logged and put in the
    summary, so a folder of .ts files does not silently produce nothing)."""
    exts = {e.lower() for e in extensions}
    skipped: dict[str, int] = {}
    if is_url(input_spec):
        found = _list_fsspec(input_spec)
    else:
        root = Path(input_spec.removeprefix("file://"))
        if root.is_dir():
            found = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                           and not p.name.startswith(".") and not p.name.endswith(SIDECAR_SUFFIXES))
        elif root.is_file():
            found = [line.strip() for line in root.read_text().splitlines()
                     if line.strip() and not line.startswith("#")]
            exts = set()  # a list file names exactly what to read
        else:
            raise FileNotFoundError(f"input {input_spec} is neither a folder, a list file nor a URL")
    locations = []
    for loc in found:
        ext = Path(loc).suffix.lower()
        if exts and ext not in exts:
            skipped[ext or "(none)"] = skipped.get(ext or "(none)", 0) + 1
        else:
            locations.append(loc)
    if skipped:
        log.warning("input: skipped %d files whose extension is not in probe.extensions: %s",
                    sum(skipped.values()), ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())))
    records = [{"id": source_id(loc), "source": loc} for loc in locations]
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{input_spec}: the same file is listed twice; remove the duplicates")
    return sorted(records, key=lambda r: r["id"]), dict(sorted(skipped.items()))


def _list_fsspec(url: str) -> list[str]:
    fs, root = _filesystem(url)
    protocol = url.split("://", 1)[0]
    return sorted(f"{protocol}://{p}" for p in fs.find(root)
                  if not Path(p).name.startswith(".") and not p.endswith(SIDECAR_SUFFIXES))


def _filesystem(url: str):
    try:
        import fsspec
    except ImportError as e:
        raise ImportError(f"reading {url} needs fsspec and its protocol package (e.g. pip install fsspec s3fs)") from e
    return fsspec.core.url_to_fs(url)


@contextlib.contextmanager
def local_source(source: str, input_spec: str) -> Iterator[Path]:
    """A local path ffmpeg can read for ``source``; a remote file is downloaded to a temp folder that is
    deleted when the block ends (nothing accumulates on a worker's disk)."""
    if not is_url(source):
        base = Path(input_spec.removeprefix("file://"))
        path = Path(source)
        yield path if path.is_absolute() or not base.is_dir() else base / path
        return
    fs, path = _filesystem(source)
    with tempfile.TemporaryDirectory(prefix="ovi-source-") as d:
        local = Path(d) / f"{source_id(source)}{Path(source).suffix.lower()}"
        fs.get(path, str(local))
        yield local
