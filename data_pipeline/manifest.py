"""Per-stage manifests: append-only jsonl, one line per processed input, fsynced, deduplicated on load.

A line is ``{"input": <input id>, "outputs": [<record>, ...]}``. One input may yield several outputs (a source
becomes many clips) and all of them are written in one line, so a kill can never leave an input half recorded:
either the whole line is on disk or the input is processed again on restart. A record is a JSON object with at
least ``id``, ``status`` ("ok" or "rejected") and, for rejections, ``reason`` (a short code) and ``detail``.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

log = logging.getLogger(__name__)

OK = "ok"
REJECTED = "rejected"

Record = dict[str, Any]


def ok(record: Record, **fields: Any) -> Record:
    """The record that goes on: ``record`` with ``fields`` added."""
    return {**record, **fields, "status": OK, "reason": None, "detail": None}


def reject(record: Record, reason: str, detail: str = "", **fields: Any) -> Record:
    """A rejected record: ``reason`` is a stable code counted in the summary, ``detail`` is free text."""
    return {**record, **fields, "status": REJECTED, "reason": reason, "detail": detail}


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys) so that manifests and sample metadata compare byte for byte."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class Manifest:
    """The jsonl manifest of one stage under ``{output}/manifests/{stage}.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._done: dict[str, list[Record]] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            raw = f.read()
        lines = raw.split(b"\n")
        valid_end = 0
        for i, line in enumerate(lines):
            if not line.strip():
                valid_end += len(line) + 1
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                # Only the last line can be torn (a kill during append); anything else is real corruption.
                if i != len(lines) - 1:
                    raise ValueError(f"{self.path}: line {i + 1} is not JSON; the manifest is corrupt, delete it "
                                     "to reprocess this stage") from None
                log.warning("%s: dropping a torn last line left by an interrupted run", self.path)
                break
            if entry["input"] in self._done:
                log.warning("%s: input %s recorded twice; keeping the first", self.path, entry["input"])
            else:
                self._done[entry["input"]] = entry["outputs"]
            valid_end += len(line) + 1
        if valid_end < len(raw):
            # Cut the torn tail so the next append starts on a fresh line.
            with open(self.path, "r+b") as f:
                f.truncate(min(valid_end, len(raw)))

    def __contains__(self, input_id: str) -> bool:
        return input_id in self._done

    def __len__(self) -> int:
        return len(self._done)

    def append(self, input_id: str, outputs: list[Record]) -> None:
        """Record that ``input_id`` was processed into ``outputs`` (durably, before returning)."""
        if input_id in self._done:
            raise RuntimeError(f"{self.path}: input {input_id} is already recorded; this is a pipeline bug")
        line = dumps({"input": input_id, "outputs": outputs}) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._done[input_id] = outputs

    def outputs(self) -> Iterator[Record]:
        """Every output record, in the order inputs were completed."""
        for outs in self._done.values():
            yield from outs

    def accepted(self) -> list[Record]:
        """The records that go on to the next stage, sorted by id so every engine feeds the next stage alike."""
        return sorted((r for r in self.outputs() if r["status"] == OK), key=lambda r: r["id"])

    def rejected_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.outputs():
            if r["status"] != OK:
                counts[r["reason"]] = counts.get(r["reason"], 0) + 1
        return dict(sorted(counts.items()))


def pending(inputs: Iterable[Record], manifest: Manifest) -> list[Record]:
    """The inputs a stage still has to process."""
    return [r for r in inputs if r["id"] not in manifest]
