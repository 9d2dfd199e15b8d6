"""Decoding the data pipeline's members (mp4, wav, json) into model-ready pixels and waveforms."""
from __future__ import annotations

import io
import json
import random
from typing import Optional

import soundfile as sf
import torch
import torch.nn.functional as F

from ovi.media import read_video
from train.config import AUDIO_SAMPLE_RATE


def decode_json(data: bytes) -> dict:
    return json.loads(data.decode("utf-8"))


def decode_audio(data: bytes) -> torch.Tensor:
    """wav bytes -> mono float32 waveform [N] at 16 kHz, in [-1, 1]."""
    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)  # [N, C]
    if rate != AUDIO_SAMPLE_RATE:
        raise ValueError(f"audio is {rate} Hz; the codec needs {AUDIO_SAMPLE_RATE} Hz (resample in the data pipeline)")
    return torch.from_numpy(wave.mean(axis=1))


def decode_video(data: bytes, num_frames: int) -> torch.Tensor:
    """mp4 bytes -> the first ``num_frames`` frames as uint8 [T, H, W, 3]. Fewer frames: ValueError."""
    frames, _ = read_video(io.BytesIO(data), max_frames=num_frames)
    if len(frames) < num_frames:
        raise ValueError(f"clip has {len(frames)} frames, {num_frames} needed")
    return torch.from_numpy(frames)


def to_model_pixels(frames: torch.Tensor, height: Optional[int], width: Optional[int]) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [3, T, h, w] in [-1, 1], resized to cover (h, w) and centre-cropped."""
    x = frames.permute(3, 0, 1, 2).float() / 127.5 - 1.0  # [3, T, H, W]
    if height is None or width is None:
        return x
    _, _, h, w = x.shape
    if (h, w) != (height, width):
        scale = max(height / h, width / w)
        nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
        x = F.interpolate(x.transpose(0, 1), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - height) // 2, (nw - width) // 2
        x = x[:, :, top : top + height, left : left + width].transpose(0, 1).clamp(-1.0, 1.0)
    return x.contiguous()


def audio_window(
    num_samples: int, mode: str, seconds: float, min_seconds: float, rng: random.Random
) -> Optional[tuple[int, int]]:
    """(start, length) of the training window in a clip of ``num_samples``, or None to skip the clip.

    fixed: exactly ``seconds`` at a random offset; variable: the whole clip, or a random ``seconds`` window of a
    longer one; clips shorter than the minimum are skipped.
    """
    want = round(seconds * AUDIO_SAMPLE_RATE)
    least = want if mode == "fixed" else round(min_seconds * AUDIO_SAMPLE_RATE)
    if num_samples < least:
        return None
    length = min(want, num_samples)
    return rng.randrange(num_samples - length + 1), length


def audio_chunks(num_samples: int, mode: str, seconds: float, min_seconds: float) -> list[tuple[int, int]]:
    """Consecutive non-overlapping windows covering a clip (precompute): full windows, plus in variable mode
    a shorter last one if it reaches the minimum."""
    want = round(seconds * AUDIO_SAMPLE_RATE)
    least = want if mode == "fixed" else round(min_seconds * AUDIO_SAMPLE_RATE)
    out = [(s, want) for s in range(0, num_samples - want + 1, want)]
    rest_start = len(out) * want
    if num_samples - rest_start >= least and num_samples - rest_start > 0 and mode == "variable":
        out.append((rest_start, num_samples - rest_start))
    return out
