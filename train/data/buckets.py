"""Data shape as in the paper: aspect-ratio and duration buckets, padded short audio, caption windows.

    clip (h, w, frames) --bucket_for--> Bucket(height, width, num_frames)   sides multiples of 32, area ~ A
    samples --BucketBatcher--> batches whose samples all share one bucket (one latent shape per batch)
    short audio latents [L, C] --pad_audio--> [length, C] + mask (padding carries no loss)
    caption + crop window --caption_window--> the speech said inside the window only

A bucket keeps the source's aspect ratio at the configured pixel area (720x720 = 518,400 for the 5 s models,
960x960 for the 960 models): each side is the area-preserving side rounded to the nearest multiple of 32
(``ovi.geometry.SIZE_MULTIPLE``), so the resize-then-centre-crop into it loses less than one patch per side.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Generic, Iterable, Iterator, Sequence, TypeVar

import torch

from ovi.geometry import SIZE_MULTIPLE, VAE_TEMPORAL_FACTOR
from ovi.prompts import SPEECH_CLOSE, SPEECH_OPEN

T = TypeVar("T")


@dataclass(frozen=True, order=True)
class Bucket:
    height: int
    width: int
    num_frames: int


def _nearest_multiple(x: float, multiple: int = SIZE_MULTIPLE) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


def bucket_size(height: int, width: int, area: int) -> tuple[int, int]:
    """(height, width) of the source's aspect ratio with about ``area`` pixels, sides multiples of 32."""
    aspect = width / height
    return _nearest_multiple(math.sqrt(area / aspect)), _nearest_multiple(math.sqrt(area * aspect))


def bucket_frames(num_frames: int, allowed: Sequence[int]) -> int | None:
    """The longest allowed clip length (each 1 + 4k frames) that fits in ``num_frames``; None if none does."""
    bad = [n for n in allowed if n < 1 or (n - 1) % VAE_TEMPORAL_FACTOR]
    if bad:
        raise ValueError(f"bucket frame counts must be 1 + 4k (the VAE's time stride), got {bad}")
    fits = [n for n in allowed if n <= num_frames]
    return max(fits) if fits else None


def bucket_for(height: int, width: int, num_frames: int, area: int, frames: Sequence[int]) -> Bucket | None:
    """The bucket a clip goes to (None: shorter than every allowed duration)."""
    n = bucket_frames(num_frames, frames)
    return None if n is None else Bucket(*bucket_size(height, width, area), n)


class BucketBatcher(Generic[T]):
    """Groups (bucket, sample) pairs into batches of ``batch_size`` from one bucket each; a bucket's remainder is
    kept for later (``flush`` yields it at the end of an epoch, ``drop_last`` discards it)."""

    def __init__(self, batch_size: int, drop_last: bool = True) -> None:
        self.batch_size, self.drop_last = batch_size, drop_last
        self.pending: dict[Bucket, list[T]] = defaultdict(list)

    def add(self, bucket: Bucket, sample: T) -> list[T] | None:
        group = self.pending[bucket]
        group.append(sample)
        if len(group) == self.batch_size:
            del self.pending[bucket]
            return group
        return None

    def batches(self, items: Iterable[tuple[Bucket, T]]) -> Iterator[tuple[Bucket, list[T]]]:
        for bucket, sample in items:
            batch = self.add(bucket, sample)
            if batch is not None:
                yield bucket, batch
        if not self.drop_last:
            for bucket, group in sorted(self.pending.items()):
                yield bucket, group
        self.pending.clear()


def pad_audio(latent: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[L, C] audio latents -> ([length, C] zero-padded, [length] bool mask True on real latents).

    The paper pads clips shorter than the fixed length instead of dropping them; the mask keeps the padding out
    of the loss (pass it as the stream's loss mask)."""
    if latent.shape[0] > length:
        raise ValueError(f"audio of {latent.shape[0]} latents is longer than {length}: crop it first")
    mask = torch.zeros(length, dtype=torch.bool)
    mask[: latent.shape[0]] = True
    padded = latent.new_zeros((length, latent.shape[1]))
    padded[: latent.shape[0]] = latent
    return padded, mask


_SPEECH = re.compile(re.escape(SPEECH_OPEN) + r"(.*?)" + re.escape(SPEECH_CLOSE), re.S)


@dataclass(frozen=True)
class Spoken:
    """One transcribed word or segment of a clip, in seconds from the clip's start."""

    start: float
    end: float
    text: str


def caption_window(caption: str, start: float, end: float, spoken: Sequence[Spoken] | None) -> tuple[str, bool]:
    """The caption for a crop [start, end) s of its clip, and whether its speech had to be dropped.

    With word/segment times the ``<S>…<E>`` text becomes the words said inside the window (the tags go when
    nothing is); without them the crop cannot know what it still contains, so the speech is dropped (returns
    True, for the caller to count and log). A crop never keeps a transcript it no longer contains."""
    if not has_speech(caption):
        return caption, False
    if spoken is None:
        return _tidy(_SPEECH.sub("", caption)), True
    inside = " ".join(s.text.strip() for s in spoken if s.start >= start and s.end <= end).strip()
    replaced = {"done": False}

    def one(_: re.Match) -> str:  # all the window's words go into the first speech span
        if replaced["done"] or not inside:
            return ""
        replaced["done"] = True
        return f"{SPEECH_OPEN}{inside}{SPEECH_CLOSE}"

    return _tidy(_SPEECH.sub(one, caption)), False


def spoken_words(meta: dict) -> list[Spoken] | None:
    """Word / segment times of a sample's json (``"spoken": [{"start": s, "end": s, "text": ...}, ...]``, seconds
    from the clip's start, as an ASR pass writes them), or None when the sample has none."""
    words = meta.get("spoken")
    return None if words is None else [Spoken(float(w["start"]), float(w["end"]), str(w["text"])) for w in words]


def has_speech(caption: str) -> bool:
    return bool(_SPEECH.search(caption))


def _tidy(text: str) -> str:
    return re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"\s{2,}", " ", text)).strip()
