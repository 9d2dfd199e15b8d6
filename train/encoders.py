"""Frozen encoders for on-the-fly training and for precompute: a small protocol, the released codecs, and
tiny deterministic stand-ins (``kind: random``) for tests and benchmarks that must not need real weights."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Optional, Protocol

import torch

# The geometry's channel counts, not the codecs': importing a codec loads diffusers (~7 s of every launch).
from ovi.geometry import (
    AUDIO_LATENT_CHANNELS,
    AUDIO_SAMPLES_PER_LATENT,
    VAE_SPATIAL_FACTOR,
    VAE_TEMPORAL_FACTOR,
    VIDEO_LATENT_CHANNELS,
    audio_latents_for_samples,
)
from train.config import EncodersConfig

TEXT_DIM = 4096


class VideoEncoder(Protocol):
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] in [-1, 1] -> normalised latents [B, 48, F, H/16, W/16]."""


class AudioEncoder(Protocol):
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, N] 16 kHz -> latents [B, 20, L]."""


class TextEncoder(Protocol):
    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        """Prompts -> one unpadded [L_i, 4096] embedding each."""


@dataclass
class Encoders:
    text: TextEncoder
    video: Optional[VideoEncoder]
    audio: Optional[AudioEncoder]


class RandomVideoEncoder:
    """Average-pools to the latent grid and mixes RGB into 48 channels with a fixed random matrix."""

    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.mix = torch.randn(VIDEO_LATENT_CHANNELS, 3, generator=g)  # [48, 3]

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        first, rest = video[:, :, :1], video[:, :, 1:]  # causal: frame 0 alone, then groups of 4
        b, c, t, h, w = rest.shape
        rest = rest.reshape(b, c, t // VAE_TEMPORAL_FACTOR, VAE_TEMPORAL_FACTOR, h, w).mean(3)
        x = torch.cat([first, rest], dim=2).float()
        x = torch.nn.functional.avg_pool3d(x, (1, VAE_SPATIAL_FACTOR, VAE_SPATIAL_FACTOR))
        return torch.einsum("oc,bcfhw->bofhw", self.mix.to(x), x)


class RandomAudioEncoder:
    """Frames the wave into latent-rate windows and projects each to 20 channels with a fixed matrix."""

    # A half-scale signal then gives latents of about unit variance, as the real codec's are.
    GAIN = 8.0

    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed + 1)
        self.window = AUDIO_SAMPLES_PER_LATENT
        self.proj = torch.randn(AUDIO_LATENT_CHANNELS, self.window, generator=g) / self.window**0.5

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        b, n = wave.shape
        length = audio_latents_for_samples(n)
        frames = torch.nn.functional.pad(wave.float(), (0, max(0, length * self.window - n)))
        frames = frames[:, : length * self.window].reshape(b, length, self.window)
        return torch.einsum("cw,blw->bcl", self.proj.to(frames), frames) * self.GAIN


class RandomTextEncoder:
    """One fixed random vector per word (CRC32-hashed into a small table), plus an end-of-text vector, so
    equal prompts give equal embeddings in every process, like a real encoder."""

    VOCAB = 4096

    def __init__(self, seed: int, max_len: int = 512):
        g = torch.Generator().manual_seed(seed + 2)
        self.table = torch.randn(self.VOCAB + 1, TEXT_DIM, generator=g) * 0.1  # last row: end of text
        self.max_len = max_len

    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        out = []
        for p in prompts:
            ids = [zlib.crc32(w.encode("utf-8")) % self.VOCAB for w in p.split()][: self.max_len - 1]
            out.append(self.table[ids + [self.VOCAB]])
        return out


def build_encoders(cfg: EncodersConfig, need_video: bool, device: torch.device) -> Encoders:
    """The encoders a stage needs; ``kind: ovi`` loads the released codecs from the configured paths."""
    if cfg.kind == "random":
        return Encoders(
            text=RandomTextEncoder(cfg.seed),
            video=RandomVideoEncoder(cfg.seed) if need_video else None,
            audio=RandomAudioEncoder(cfg.seed),
        )
    from train.released_encoders import load_released_encoders

    return load_released_encoders(cfg, need_video, device)
