"""Per-stage results, one small JSON file per processed input: ``manifests/{stage}/{hh}/{input id}.json``.

A result file is ``{"input": <input id>, "outputs": [<record>, ...], "seconds": <wall>,
"cpu_seconds": <cpu>}``. One input may
yield several outputs (a source becomes many clips) and all of them are in that one file, written atomically
by the worker that processed the input (a rename on disk, one completed upload on an object store), so a kill
never leaves an input half recorded and reprocessing an input rewrites its file instead of duplicating it.
Nothing is held or written by the driver: the store scales with the storage behind it (``hh`` is a hash
prefix that keeps local folders small). A record is a JSON object with at least ``id``, ``status`` ("ok" or
"rejected") and, for rejections, ``reason`` (a short code) and ``detail``.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterator, Optional

from data_pipeline.storage import Storage

OK = "ok"
REJECTED = "rejected"
ERROR_PREFIX = "error:"  # reason of an input whose processing raised an unexpected exception

Record = dict[str, Any]


class FatalError(RuntimeError):
    """An exception that must stop the run instead of becoming one input's rejection (e.g. a caption server
    that is down: every clip would be rejected for a reason that is not theirs)."""


def ok(record: Record, **fields: Any) -> Record:
    """The record that goes on: ``record`` with ``fields`` added."""
    return {**record, **fields, "status": OK, "reason": None, "detail": None}


def reject(record: Record, reason: str, detail: str = "", **fields: Any) -> Record:
    """A rejected record: ``reason`` is a stable code counted in the summary, ``detail`` is free text."""
    return {**record, **fields, "status": REJECTED, "reason": reason, "detail": detail}


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys) so that results and sample metadata compare byte for byte."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class Manifest:
    """The results of one stage in ``storage`` (``manifests/{stage}/``)."""

    def __init__(self, storage: Storage, stage: str) -> None:
        self.storage = storage
        self.stage = stage
        self.prefix = f"manifests/{stage}"
        self._cache: Optional[dict[str, list[Record]]] = None

    def path(self, input_id: str) -> str:
        bucket = hashlib.sha1(input_id.encode()).hexdigest()[:2]
        return f"{self.prefix}/{bucket}/{input_id}.json"

    def get(self, input_id: str) -> Optional[list[Record]]:
        """The outputs recorded for ``input_id``, or None when it was not processed yet."""
        if self._cache is not None:
            return self._cache.get(input_id)
        try:
            return json.loads(self.storage.read_bytes(self.path(input_id)))["outputs"]
        except FileNotFoundError:
            return None

    def __contains__(self, input_id: str) -> bool:
        return self.get(input_id) is not None

    def append(self, input_id: str, outputs: list[Record], seconds: float = 0.0, cpu_seconds: float = 0.0) -> None:
        """Record that ``input_id`` was processed into ``outputs`` (durably, before returning), with the wall
        and CPU seconds it took."""
        entry = {"input": input_id, "outputs": outputs, "seconds": round(seconds, 4),
                 "cpu_seconds": round(cpu_seconds, 4)}
        self.storage.write_bytes(self.path(input_id), (dumps(entry) + "\n").encode("utf-8"))
        if self._cache is not None:
            self._cache[input_id] = outputs

    def entries(self) -> Iterator[dict]:
        """Every result file's content, in input-id order."""
        files = self.storage.list(self.prefix)
        for rel in sorted(files, key=lambda p: p.rsplit("/", 1)[-1]):
            if rel.endswith(".json"):
                yield json.loads(self.storage.read_bytes(rel))

    def load(self) -> "Manifest":
        """Read every result once (for the summary and shard planning); later lookups use the copy."""
        self._cache = {e["input"]: e["outputs"] for e in self.entries()}
        return self

    def _all(self) -> dict[str, list[Record]]:
        if self._cache is None:
            self.load()
        assert self._cache is not None
        return self._cache

    def __len__(self) -> int:
        return len(self._all())

    def outputs(self) -> Iterator[Record]:
        for input_id in sorted(self._all()):
            yield from self._all()[input_id]

    def accepted(self) -> list[Record]:
        """The records that go on to the next stage, sorted by id so every engine feeds the next stage alike."""
        return sorted((r for r in self.outputs() if r["status"] == OK), key=lambda r: r["id"])

    def rejected_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.outputs():
            if r["status"] != OK:
                counts[r["reason"]] = counts.get(r["reason"], 0) + 1
        return dict(sorted(counts.items()))
