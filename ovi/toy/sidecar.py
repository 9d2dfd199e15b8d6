"""The sidecar of a toy clip: ``{stem}.json`` next to ``{stem}.mp4`` holding the clip's ground truth.

The one owner of that layout: the world writes it, the metric and the data pipeline's ``sidecar`` caption
backend read it.
"""
from __future__ import annotations

import json
from pathlib import Path

from ovi.fileio import atomic_write_text

SIDECAR_SUFFIX = ".json"
CAPTION_KEY = "caption"


class MissingCaption(FileNotFoundError):
    """A clip without its caption: no sidecar next to it, or one without a ``caption`` field (ovi-generate's own
    record). A FileNotFoundError, so callers that refuse a missing file refuse this too."""


def sidecar_path(video: str | Path) -> Path:
    return Path(video).with_suffix(SIDECAR_SUFFIX)


def write_sidecar(video: str | Path, truth: dict) -> Path:
    path = sidecar_path(video)
    atomic_write_text(path, json.dumps(truth, indent=1, sort_keys=True) + "\n")
    return path


def read_sidecar(video: str | Path) -> dict | None:
    """The ground truth next to ``video``, or None when there is no sidecar."""
    path = sidecar_path(video)
    return json.loads(path.read_text()) if path.exists() else None


def is_ground_truth(side: dict | None) -> bool:
    """Whether a ``{stem}.json`` holds the world's ground truth (ovi-generate writes its own record there)."""
    return isinstance(side, dict) and "kind" in side and "events" in side


def read_truth(video: str | Path) -> dict | None:
    """The world's ground truth next to ``video``; None when there is no sidecar or it is another record."""
    side = read_sidecar(video)
    return side if is_ground_truth(side) else None


def read_caption(video: str | Path) -> str:
    """The caption stored next to ``video``; raises MissingCaption naming the missing piece."""
    path = sidecar_path(video)
    if not path.exists():
        raise MissingCaption(f"no sidecar {path.name} next to {Path(video).name}; write the clip with "
                             "ovi-toy make (or give each video a {stem}.json with a 'caption')")
    truth = json.loads(path.read_text())
    if CAPTION_KEY not in truth:
        raise MissingCaption(f"{path} has no '{CAPTION_KEY}' field; write the clip with ovi-toy make (or add one)")
    return truth[CAPTION_KEY]
