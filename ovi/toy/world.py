"""The toy world: render a clip of any scene kind from a seed, and write it as mp4 + ground-truth sidecar.

    make_clip(kind, seed, size) -> ToyClip(frames uint8 [121, size, size, 3], audio float32 [80667], truth)
    write_clip(folder, clip_id, clip) -> folder/{clip_id}.mp4 (h264 + AAC) and folder/{clip_id}.json

The truth holds the kind, objects (colours, sizes, pitches), count, events (frame, sample, seconds, object),
the caption, and per kind: the mouth-opening curve and sentence (face), view and sound (ambient).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ovi.media import write_mp4
from ovi.toy.captions import caption
from ovi.toy.clip import FPS, NUM_FRAMES, NUM_SAMPLES, SAMPLE_RATE, SIZES, ToyClip
from ovi.toy.scenes import ambient, bounce, face, flash
from ovi.toy.sidecar import sidecar_path, write_sidecar

TRUTH_VERSION = 1
RENDERERS = {m.KIND: m.render for m in (bounce, flash, face, ambient)}
KINDS: tuple[str, ...] = tuple(RENDERERS)
EVENT_KINDS: tuple[str, ...] = (bounce.KIND, flash.KIND)  # kinds whose sound is a list of timed events


def make_clip(kind: str, seed: int | Sequence[int], size: int = 64, palette: Sequence[str] | None = None) -> ToyClip:
    """Render one clip of ``kind``; the same (kind, seed, size, palette) always gives the same clip.
    ``palette``: colour names for the objects of bounce / flash scenes (None: draw.PALETTE)."""
    if kind not in RENDERERS:
        raise ValueError(f"unknown scene kind {kind!r}; choose from {', '.join(KINDS)}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size}")
    rng = np.random.default_rng(seed)
    if palette is None:
        frames, audio, truth = RENDERERS[kind](rng, size)
    elif kind in EVENT_KINDS:
        frames, audio, truth = RENDERERS[kind](rng, size, palette=palette)
    else:
        raise ValueError(f"a palette only applies to {' and '.join(EVENT_KINDS)} scenes, not {kind!r}")
    truth = {**truth, "caption": caption(truth, rng), "version": TRUTH_VERSION, "size": size,
             "seed": list(np.atleast_1d(seed).tolist()), "fps": FPS, "num_frames": NUM_FRAMES,
             "sample_rate": SAMPLE_RATE, "num_samples": NUM_SAMPLES}
    return ToyClip(frames=frames, audio=audio, truth=truth)


def clip_plan(num: int, seed: int, kinds: Sequence[str] = KINDS) -> list[tuple[str, str, list[int]]]:
    """(clip id, kind, seed) for clip 0..num-1: kinds in turn, each clip seeded by (seed, index)."""
    return [(f"toy_{i:05d}_{kinds[i % len(kinds)]}", kinds[i % len(kinds)], [seed, i]) for i in range(num)]


def write_clip(folder: str | Path, clip_id: str, clip: ToyClip) -> Path:
    """Write ``folder/{clip_id}.mp4`` then its sidecar; the sidecar comes last, so its presence means the
    clip is complete (both writes are atomic)."""
    video = Path(folder) / f"{clip_id}.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(video, clip.frames, clip.audio, fps=FPS, sample_rate=SAMPLE_RATE)
    write_sidecar(video, {**clip.truth, "id": clip_id})
    return video


def is_complete(folder: str | Path, clip_id: str) -> bool:
    video = Path(folder) / f"{clip_id}.mp4"
    return video.exists() and sidecar_path(video).exists()
