"""The clips of an evaluation: an ``ovi-generate`` (or ``ovi-toy make``) folder of mp4s, what each came from,
and the decoded media.

What a clip came from is read from, in order: its JSON sidecar (``{stem}.json``: ``prompt`` from
ovi-generate, ``caption`` + ground truth from the toy world; ``image``, ``seed`` when present), else a
prompts file (one prompt per line, or ``prompt<TAB>image``; clip ``NNN_...`` is line NNN). Reference clips
(optional) are matched by stem.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ovi.geometry import SAMPLE_RATE
from ovi.media import read_audio, read_video
from ovi.toy.sidecar import is_ground_truth

SPEECH = re.compile(r"<S>(.*?)<E>", re.DOTALL)  # the prompt's spoken text, as the release marks it
INDEX = re.compile(r"^(\d+)_")  # ovi-generate's NNN_<slug>_seed<k> names


def speech_text(prompt: str) -> str:
    """The words the prompt asks to be spoken (every <S>…<E> span, joined), '' when none."""
    return " ".join(s.strip() for s in SPEECH.findall(prompt or ""))


def read_prompts_file(path: str | Path) -> list[tuple[str, str | None]]:
    """(prompt, image or None) per non-empty line: ``prompt`` or ``prompt<TAB>image``."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            prompt, _, image = line.partition("\t")
            rows.append((prompt.strip(), image.strip() or None))
    return rows


@dataclass
class EvalClip:
    path: Path
    prompt: str = ""
    image: Path | None = None
    seed: int | None = None
    truth: dict | None = None  # the toy world's ground truth, when the sidecar holds one
    reference: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.path.stem

    @cached_property
    def video(self) -> tuple[np.ndarray, float]:
        """(uint8 frames [T, H, W, 3], fps)."""
        return read_video(self.path)

    @cached_property
    def audio(self) -> np.ndarray:
        """Mono float32 [N] at the model's sample rate (zeros when the mp4 has no audio stream)."""
        try:
            return read_audio(self.path, SAMPLE_RATE)
        except ValueError:
            return np.zeros(0, np.float32)


def _from_sidecar(clip: EvalClip, side: dict, folder: Path) -> None:
    clip.meta = side
    clip.prompt = side.get("prompt") or side.get("caption") or clip.prompt
    if side.get("image"):
        clip.image = (folder / side["image"]) if not Path(side["image"]).is_absolute() else Path(side["image"])
    if isinstance(side.get("seed"), int):  # the toy world stores [run seed, index]
        clip.seed = side["seed"]
    if is_ground_truth(side):
        clip.truth = side


def discover(folder: str | Path, prompts_file: str | Path | None = None,
             references: str | Path | None = None) -> list[EvalClip]:
    """Every mp4 of ``folder`` (sorted) with what it came from; see the module docstring."""
    folder = Path(folder)
    videos = sorted(folder.glob("*.mp4"))
    if not videos:
        raise FileNotFoundError(f"no .mp4 files in {folder}; generate some with ovi-generate or ovi-toy make")
    prompts = read_prompts_file(prompts_file) if prompts_file else []
    clips = []
    for video in videos:
        clip = EvalClip(video)
        m = INDEX.match(video.stem)
        if m and int(m.group(1)) < len(prompts):
            clip.prompt, image = prompts[int(m.group(1))]
            clip.image = Path(image) if image else None
        side = video.with_suffix(".json")
        if side.exists():
            _from_sidecar(clip, json.loads(side.read_text()), folder)
        if references is not None:
            ref = Path(references) / video.name
            clip.reference = ref if ref.exists() else None
        clips.append(clip)
    return clips
