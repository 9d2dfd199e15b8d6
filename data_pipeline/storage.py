"""Where a run's files live: a local folder or any fsspec URL (``s3://bucket/run``, ``gs://...``, ``memory://``).

Every stage reads and writes through one ``Storage`` rooted at the run's ``--output``, by paths relative to
that root (``clips/{id}.mp4``, ``manifests/split/{id}.json``, ``shards/ovi-000000.tar``). Writes are atomic:
a local file is written under a temp name and renamed; an object store publishes an object only when its
upload completes, so readers never see half a file either way. ffmpeg needs local files, so ``local_copy``
hands out the file itself on a local root and a temp download otherwise, and ``staged`` gives a local temp
path whose content is moved (or uploaded) to its place on success.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import IO, Iterator

from ovi.fileio import atomic_path

# ovi.fileio.atomic_path names its temp files ".{stem}.{hex}.partial{suffix}"; a run sweeps leftovers of
# killed workers by this mark (and skips them when listing).
TEMP_MARK = ".partial"


def is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _fsspec():
    try:
        import fsspec
    except ImportError as e:
        raise ImportError("object-store paths need fsspec and its protocol package (pip install fsspec s3fs "
                          "or gcsfs)") from e
    return fsspec


class Storage:
    """A folder on the local disk or behind an fsspec URL; all paths given to it are relative (posix)."""

    def __init__(self, root: str | Path) -> None:
        root = str(root)
        self.url = root.rstrip("/")
        self.is_local = not is_url(root)
        if self.is_local:
            self.root = Path(root.removeprefix("file://"))
            self.fs = None
        else:
            self.fs, self.root_path = _fsspec().core.url_to_fs(self.url)
            self.protocol = self.url.split("://", 1)[0]

    def __reduce__(self):  # workers rebuild the filesystem object from the URL
        return (Storage, (self.url,))

    def full(self, rel: str) -> str:
        """The path (local) or URL of ``rel``."""
        if self.is_local:
            return str(self.root / rel)
        return f"{self.protocol}://{PurePosixPath(self.root_path) / rel}"

    def _remote(self, rel: str) -> str:
        return str(PurePosixPath(self.root_path) / rel)

    # --- small files -----------------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists() if self.is_local else self.fs.exists(self._remote(rel))

    def read_bytes(self, rel: str) -> bytes:
        if self.is_local:
            return (self.root / rel).read_bytes()
        with self.fs.open(self._remote(rel), "rb") as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.open_write(rel) as f:
            f.write(data)

    def size(self, rel: str) -> int:
        return (self.root / rel).stat().st_size if self.is_local else int(self.fs.size(self._remote(rel)))

    def delete(self, rel: str) -> None:
        if self.is_local:
            (self.root / rel).unlink(missing_ok=True)
        elif self.fs.exists(self._remote(rel)):
            self.fs.rm(self._remote(rel))

    def list(self, prefix: str) -> list[str]:
        """Relative paths of every file under folder ``prefix``, sorted (a prefix listing on object stores)."""
        if self.is_local:
            base = self.root / prefix
            if not base.is_dir():
                return []
            return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                          if p.is_file() and TEMP_MARK not in p.name)
        base = self._remote(prefix)
        if not self.fs.exists(base):
            return []
        root = PurePosixPath(self.root_path)
        return sorted(str(PurePosixPath(p).relative_to(root)) for p in self.fs.find(base)
                      if TEMP_MARK not in PurePosixPath(p).name)

    # --- streams and media files -----------------------------------------------------------------------
    @contextlib.contextmanager
    def open_write(self, rel: str) -> Iterator[IO[bytes]]:
        """A binary stream that becomes ``rel`` atomically when the block ends without an exception."""
        if self.is_local:
            with atomic_path(self.root / rel) as tmp, open(tmp, "wb") as f:
                yield f
        else:
            # Object stores publish on close; an exception aborts the upload (fsspec discards the buffer).
            self._parent_dirs(rel)
            f = self.fs.open(self._remote(rel), "wb")
            try:
                yield f
            except BaseException:
                with contextlib.suppress(Exception):
                    f.discard() if hasattr(f, "discard") else None
                raise
            f.close()

    def open_read(self, rel: str) -> IO[bytes]:
        return open(self.root / rel, "rb") if self.is_local else self.fs.open(self._remote(rel), "rb")

    @contextlib.contextmanager
    def local_copy(self, rel: str) -> Iterator[Path]:
        """A local path holding ``rel`` for the length of the block (the file itself on a local root)."""
        if self.is_local:
            yield self.root / rel
            return
        with tempfile.TemporaryDirectory(prefix="ovi-data-") as d:
            path = Path(d) / PurePosixPath(rel).name
            self.fs.get(self._remote(rel), str(path))
            yield path

    @contextlib.contextmanager
    def staged(self, rel: str) -> Iterator[Path]:
        """A local temp path (same extension as ``rel``, so ffmpeg picks the muxer) that is moved to ``rel``
        when the block ends without an exception, and deleted otherwise."""
        suffix = PurePosixPath(rel).suffix
        if self.is_local:
            with atomic_path(self.root / rel) as tmp:
                yield tmp
            return
        with tempfile.TemporaryDirectory(prefix="ovi-data-") as d:
            tmp = Path(d) / f"staged{suffix}"
            yield tmp
            self._parent_dirs(rel)
            self.fs.put_file(str(tmp), self._remote(rel))

    def _parent_dirs(self, rel: str) -> None:
        """Folders exist only on filesystem-like URLs (local://, NFS mounts); object stores have none."""
        if getattr(self.fs, "auto_mkdir", True) is False:
            self.fs.makedirs(str(PurePosixPath(self._remote(rel)).parent), exist_ok=True)

    def sweep_temp_files(self) -> int:
        """Delete temp files left by killed workers (call only while holding the run lock)."""
        if not self.is_local or not self.root.is_dir():
            return 0
        count = 0
        for p in self.root.rglob(f"*{TEMP_MARK}*"):
            if p.is_file():
                p.unlink(missing_ok=True)
                count += 1
        return count

    def rmtree(self, rel: str) -> None:
        if self.is_local:
            shutil.rmtree(self.root / rel, ignore_errors=True)
        elif self.fs.exists(self._remote(rel)):
            self.fs.rm(self._remote(rel), recursive=True)
