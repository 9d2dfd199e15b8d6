"""Clip geometry: the one owner of frame rate, sample rate, codec strides and the lengths they imply.

    video [3, F, H, W] at 24 fps  --Wan2.2 VAE (4x time, causal; 16x space)-->  latent [48, (F-1)//4+1, H/16, W/16]
                                  --2x2 patches-->  latent_frames * (H/32) * (W/32) video tokens
    audio [N] at 16 kHz  --mel hop 256, 2 mel frames per VAE latent-->  latent [20, N // 512]  (31.25 per second)

``ovi/`` (sampling), ``train/`` (clip windows, token counts) and ``data_pipeline/`` (split lengths, side
multiples) all import these numbers; the codecs keep their own strides and ``tests/test_geometry.py``
fails if the two ever disagree. Pure Python, no torch: cheap to import in data-pipeline workers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

FPS = 24
SAMPLE_RATE = 16_000  # the MMAudio mel front end / BigVGAN vocoder rate
VAE_TEMPORAL_FACTOR = 4  # Wan2.2 VAE, causal: frame 0 alone, then groups of 4
VAE_SPATIAL_FACTOR = 16
VIDEO_PATCH = 2  # the video tower's 2x2 spatial patches
SIZE_MULTIPLE = VAE_SPATIAL_FACTOR * VIDEO_PATCH  # 32: sides that give whole tokens
MEL_HOP = 256
MEL_FRAMES_PER_LATENT = 2  # MMAudio VAE time stride
AUDIO_SAMPLES_PER_LATENT = MEL_HOP * MEL_FRAMES_PER_LATENT  # 512 samples = 32 ms per audio latent
AUDIO_LATENT_RATE = SAMPLE_RATE / AUDIO_SAMPLES_PER_LATENT  # 31.25 latents per second
VIDEO_LATENT_CHANNELS = 48  # Wan2.2 VAE z_dim
AUDIO_LATENT_CHANNELS = 20  # MMAudio VAE embed_dim

# Audio latents of the released checkpoints, by video frame count. The 10 s model uses 314 = 2 x 157, which no
# single rounding of 31.25 latents/s reproduces (121 frames -> 157.55, 241 -> 313.80: floor gives 157 and
# 313, round gives 158 and 314), so the released pairs are listed, not derived.
RELEASED_AUDIO_LATENTS = {121: 157, 241: 314}


def latent_frames(num_frames: int) -> int:
    """Video latent frames for ``num_frames`` frames (the causal VAE: 121 -> 31, 241 -> 61)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return (num_frames - 1) // VAE_TEMPORAL_FACTOR + 1


def audio_latents_for_samples(num_samples: int) -> int:
    """Audio latents a waveform of ``num_samples`` encodes to (variable-length audio: N // 512)."""
    return num_samples // AUDIO_SAMPLES_PER_LATENT


def audio_latents_for_seconds(seconds: float) -> int:
    """Audio latents for ``seconds`` of audio cut at the sample rate (12 s -> 375)."""
    return audio_latents_for_samples(round(seconds * SAMPLE_RATE))


def snap(side: float, multiple: int = SIZE_MULTIPLE) -> int:
    """``side`` floored to a multiple of ``multiple`` (at least one multiple): 720 -> 704."""
    return max(multiple, int(side) // multiple * multiple)


def check_size(height: int, width: int) -> None:
    """Raise if a frame size does not give whole latent patches."""
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or height <= 0 or width <= 0:
        raise ValueError(
            f"video height and width must be positive multiples of {SIZE_MULTIPLE} (16x VAE times 2x2 patches), "
            f"got {height}x{width}; use {snap(height)}x{snap(width)} (ovi.geometry.snap) or resize the input"
        )


@dataclass(frozen=True)
class ClipGeometry:
    """One audio-video clip: ``num_frames`` at :data:`FPS` and the audio that goes with it.

    Build it with :meth:`for_frames`; ``audio_latents`` is the released value for 121 / 241 frames and
    ``floor(num_frames / fps * 31.25)`` otherwise.
    """

    num_frames: int
    audio_latents: int
    fps: ClassVar[int] = FPS  # not fields: every clip has the codecs' rates
    sample_rate: ClassVar[int] = SAMPLE_RATE

    @classmethod
    def for_frames(cls, num_frames: int) -> "ClipGeometry":
        latent_frames(num_frames)  # validates
        audio = RELEASED_AUDIO_LATENTS.get(num_frames)
        if audio is None:
            audio = math.floor(num_frames / FPS * AUDIO_LATENT_RATE)
        return cls(num_frames=num_frames, audio_latents=audio)

    @property
    def latent_frames(self) -> int:
        return latent_frames(self.num_frames)

    @property
    def audio_samples(self) -> int:
        """Waveform length that encodes to exactly ``audio_latents`` (and that decoding returns); training
        crops or pads each clip's audio to this."""
        return self.audio_latents * AUDIO_SAMPLES_PER_LATENT

    @property
    def duration_s(self) -> float:
        """Length of the video: 121 frames -> 5.0417 s."""
        return self.num_frames / self.fps

    @staticmethod
    def latent_hw(height: int, width: int) -> tuple[int, int]:
        """(H/16, W/16): the VAE latent grid of a checked frame size."""
        check_size(height, width)
        return height // VAE_SPATIAL_FACTOR, width // VAE_SPATIAL_FACTOR

    @staticmethod
    def tokens_per_frame(height: int, width: int) -> int:
        """Video tokens per latent frame: (H/32) * (W/32)."""
        check_size(height, width)
        return (height // SIZE_MULTIPLE) * (width // SIZE_MULTIPLE)

    def video_tokens(self, height: int, width: int) -> int:
        """Video tower sequence length: latent_frames * (H/32) * (W/32) (960x960 at 241 frames: 61 * 900 = 54,900)."""
        return self.latent_frames * self.tokens_per_frame(height, width)


FIVE_SECOND = ClipGeometry.for_frames(121)
TEN_SECOND = ClipGeometry.for_frames(241)

# Cheap guards at import; tests/test_geometry.py checks the same table against the codecs.
assert AUDIO_SAMPLES_PER_LATENT == 512 and SIZE_MULTIPLE == 32
assert (FIVE_SECOND.latent_frames, FIVE_SECOND.audio_latents) == (31, 157)
assert (TEN_SECOND.latent_frames, TEN_SECOND.audio_latents) == (61, 314)
