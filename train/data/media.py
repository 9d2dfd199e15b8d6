"""Raw clip -> model input: the one function (``prepare_clip``) that both ``train.precompute`` and the
trainer's raw-data loader use to turn a shard sample's members (mp4, wav, json) into pixels, audio and caption.

    mp4 --first num_frames--> uint8 [T, h, w, 3] --ovi.imaging.frames_to_pixels--> [3, T, H, W] in [-1, 1]
    wav --16 kHz mono--> [N] --AudioSpec window (fixed: exactly the clip geometry's audio_samples)--> [n]
    json --> caption

Fixed-length audio (fine-tuning, fusion) is exactly ``ClipGeometry.audio_samples`` long, the waveform that
encodes to the geometry's audio latents (121 frames -> 157 latents = 80,384 samples; 241 -> 314 = 160,768,
zero-padded past a 160,667-sample clip), so training and sampling use the same latent length.
"""
from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from typing import Optional

import soundfile as sf
import torch

from ovi.geometry import AUDIO_SAMPLES_PER_LATENT, SAMPLE_RATE
from ovi.imaging import frames_to_pixels
from ovi.media import read_video
from train.config import TrainConfig


def decode_json(data: bytes) -> dict:
    return json.loads(data.decode("utf-8"))


def decode_audio(data: bytes) -> torch.Tensor:
    """wav bytes -> mono float32 waveform [N] at 16 kHz, in [-1, 1]."""
    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)  # [N, C]
    if rate != SAMPLE_RATE:
        raise ValueError(f"audio is {rate} Hz; the codec needs {SAMPLE_RATE} Hz (resample in the data pipeline)")
    return torch.from_numpy(wave.mean(axis=1))


def decode_video(data: bytes, num_frames: int) -> torch.Tensor:
    """mp4 bytes -> the first ``num_frames`` frames as uint8 [T, H, W, 3]. Fewer frames: ValueError."""
    frames, _ = read_video(io.BytesIO(data), max_frames=num_frames)
    if len(frames) < num_frames:
        raise ValueError(f"clip has {len(frames)} frames, {num_frames} needed")
    return torch.from_numpy(frames)


@dataclass(frozen=True)
class AudioSpec:
    """How much of a clip's audio one training sample takes, in samples at 16 kHz."""

    length: int  # fixed: exactly this (zero-padded if the clip ends a little early); variable: at most this
    least: int  # clips shorter than this are skipped
    fixed: bool

    @classmethod
    def for_config(cls, cfg: TrainConfig) -> AudioSpec:
        a = cfg.data.audio
        if a.mode == "fixed":  # fusion is always fixed (train/config.py checks it)
            length = cfg.data.geometry.audio_samples
            # Pad at most one latent's worth (32 ms): 241 frames are 160,667 samples, 314 latents need 160,768.
            return cls(length, length - AUDIO_SAMPLES_PER_LATENT + 1, fixed=True)
        return cls(round(a.seconds * SAMPLE_RATE), round(a.min_seconds * SAMPLE_RATE), fixed=False)

    @property
    def latents(self) -> int:
        """Audio latents of a full window."""
        return self.length // AUDIO_SAMPLES_PER_LATENT

    @property
    def least_latents(self) -> int:
        return self.latents if self.fixed else self.least // AUDIO_SAMPLES_PER_LATENT

    def window(self, num_samples: int, rng: random.Random) -> Optional[tuple[int, int]]:
        """(start, length) of one window at a random offset, or None to skip the clip."""
        if num_samples < self.least:
            return None
        length = self.length if self.fixed else min(self.length, num_samples)
        return rng.randrange(max(0, num_samples - length) + 1), length

    def chunks(self, num_samples: int) -> list[tuple[int, int]]:
        """Consecutive non-overlapping windows covering a clip (precompute): full windows, then a last one
        if it reaches the minimum (fixed mode pads it to full length, variable mode keeps it shorter)."""
        out = [(s, self.length) for s in range(0, num_samples - self.length + 1, self.length)]
        rest_start = len(out) * self.length
        rest = num_samples - rest_start
        if rest > 0 and rest >= self.least:
            out.append((rest_start, self.length if self.fixed else rest))
        return out

    @staticmethod
    def take(wave: torch.Tensor, start: int, length: int) -> torch.Tensor:
        """``wave[start : start + length]``, zero-padded to ``length``."""
        out = wave[start : start + length]
        if out.numel() < length:
            out = torch.cat([out, out.new_zeros(length - out.numel())])
        return out.contiguous()


@dataclass
class ClipInput:
    """One training example before encoding."""

    caption: str
    audio: torch.Tensor  # [N] at 16 kHz
    video: Optional[torch.Tensor]  # [3, T, H, W] in [-1, 1]; None for audio stages
    audio_start: int  # offset of ``audio`` in the clip's wav, samples
    meta: dict  # the sample's json


def prepare_clip(
    key: str, files: dict[str, bytes], cfg: TrainConfig, rng: Optional[random.Random]
) -> list[ClipInput]:
    """A raw sample's members -> model inputs for the stage; [] when the clip is too short for it.

    Audio-video: the first ``data.video.num_frames`` frames resized to ``data.video.height x width`` and the
    audio window starting with frame 0. Audio only: one window at an ``rng``-drawn offset (training), or with
    ``rng=None`` every consecutive window (precompute).
    """
    meta = decode_json(files["json"])
    if "wav" not in files:
        raise ValueError(f"sample {key} has no .wav member (members: {sorted(files)}); is it a raw-clip shard?")
    wave = decode_audio(files["wav"])
    spec = AudioSpec.for_config(cfg)
    if not cfg.has_video:
        windows = spec.chunks(wave.numel()) if rng is None else [w for w in [spec.window(wave.numel(), rng)] if w]
        return [ClipInput(meta["caption"], spec.take(wave, s, n), None, s, meta) for s, n in windows]
    if "mp4" not in files:
        raise ValueError(f"fusion needs audio-video shards; sample {key} has members {sorted(files)}, no .mp4")
    if wave.numel() < spec.least:
        return []
    v = cfg.data.video
    try:
        frames = decode_video(files["mp4"], v.num_frames)
    except ValueError:
        return []  # shorter than num_frames
    pixels = frames_to_pixels(frames, v.height, v.width)
    return [ClipInput(meta["caption"], spec.take(wave, 0, spec.length), pixels, 0, meta)]
