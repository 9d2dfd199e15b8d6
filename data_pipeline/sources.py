"""Where raw files come from: a local folder, a text file listing paths/URLs, or a bucket through fsspec.

Each source gets a stable id made of its readable name and a hash of its location, so two files called
``a.mp4`` in different folders never collide, and re-listing the same input gives the same ids (resume relies
on it). Ids contain only ``[A-Za-z0-9_-]``: webdataset splits sample keys at the first dot.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Sequence

from data_pipeline.manifest import Record
from ovi.fileio import atomic_write_bytes

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
ID_HASH_CHARS = 10
ID_NAME_CHARS = 40


def source_id(location: str) -> str:
    stem = _UNSAFE.sub("-", Path(location.rstrip("/")).stem).strip("-")[:ID_NAME_CHARS] or "src"
    digest = hashlib.sha1(location.encode("utf-8")).hexdigest()[:ID_HASH_CHARS]
    return f"{stem}_{digest}"


def is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def list_sources(input_spec: str, extensions: Sequence[str]) -> list[Record]:
    """One record per raw file: ``{"id", "source"}``, where source is relative to a local input folder (so
    manifests do not depend on where the folder is mounted) or the full path/URL otherwise. Sorted by id."""
    exts = {e.lower() for e in extensions}
    if is_url(input_spec):
        locations = _list_fsspec(input_spec, exts)
    else:
        root = Path(input_spec.removeprefix("file://"))
        if root.is_dir():
            locations = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                               if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."))
        elif root.is_file():
            locations = [line.strip() for line in root.read_text().splitlines()
                         if line.strip() and not line.startswith("#")]
        else:
            raise FileNotFoundError(f"input {input_spec} is neither a folder, a list file nor a URL")
    records = [{"id": source_id(loc), "source": loc} for loc in locations]
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{input_spec}: the same file is listed twice; remove the duplicates")
    return sorted(records, key=lambda r: r["id"])


def _list_fsspec(url: str, exts: set[str]) -> list[str]:
    fs, root = _filesystem(url)
    protocol = url.split("://", 1)[0]
    found = fs.find(root)
    return sorted(f"{protocol}://{p}" for p in found if Path(p).suffix.lower() in exts)


def _filesystem(url: str):
    try:
        import fsspec
    except ImportError as e:
        raise ImportError(f"reading {url} needs fsspec and its protocol package (e.g. pip install fsspec s3fs)") from e
    return fsspec.core.url_to_fs(url)


def resolve(source: str, input_spec: str, cache_dir: Path) -> Path:
    """A local path ffmpeg can read for ``source``; remote files are copied once into ``cache_dir``."""
    if not is_url(source):
        base = Path(input_spec.removeprefix("file://"))
        path = Path(source)
        return path if path.is_absolute() or not base.is_dir() else base / path
    local = cache_dir / f"{source_id(source)}{Path(source).suffix.lower()}"
    if not local.exists():
        fs, path = _filesystem(source)
        with fs.open(path, "rb") as f:
            atomic_write_bytes(local, f.read())
    return local
