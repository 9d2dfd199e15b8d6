"""Synchformer's sizes (the network) and DeSync's window (how a clip is cut into model inputs), one object each.

The released model (Iashin et al. 2024, checkpoint ``24-01-04T16-39-21``, AudioSet) is ``SynchformerConfig()``;
tests build the same architecture narrower and shallower through the same fields. ``WINDOW`` follows MMAudio's
av-benchmark, which reports DeSync: 25 fps video and 16 kHz audio cut into 0.64 s segments every 0.32 s, 14
segments (4.8 s) per model input, 21 offset classes from -2.0 s to +2.0 s in 0.2 s steps.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SyncWindow:
    fps: int = 25  # the video rate the model was trained at
    frames_per_segment: int = 16  # 0.64 s
    frame_step: int = 8  # segments overlap by half
    sample_rate: int = 16_000
    samples_per_segment: int = 10_240  # 0.64 s
    sample_step: int = 5_120
    segments: int = 14  # per model input: 14 * 0.32 s + 0.32 s = 4.8 s
    max_offset_s: float = 2.0
    classes: int = 21  # offsets -2.0, -1.8, ..., +2.0 s

    @property
    def seconds(self) -> float:
        """The span of one model input."""
        return (self.segments - 1) * self.frame_step / self.fps + self.frames_per_segment / self.fps

    def offsets_s(self) -> list[float]:
        """The offset (seconds) each class stands for; class ``classes // 2`` is in sync."""
        step = 2 * self.max_offset_s / (self.classes - 1)
        return [round(-self.max_offset_s + i * step, 6) for i in range(self.classes)]


WINDOW = SyncWindow()
# A video segment and an audio segment cover the same time, and so do their steps.
assert WINDOW.frames_per_segment * WINDOW.sample_rate == WINDOW.samples_per_segment * WINDOW.fps
assert WINDOW.frame_step * WINDOW.sample_rate == WINDOW.sample_step * WINDOW.fps
assert abs(WINDOW.seconds - 4.8) < 1e-9


@dataclass(frozen=True)
class SynchformerConfig:
    width: int = 768  # both feature extractors and the offset transformer
    # video: MotionFormer (divided space-time ViT-B/16 on 2-frame tubelets)
    video_depth: int = 12
    video_heads: int = 12
    image_size: int = 224
    patch: int = 16
    tubelet: int = 2
    # audio: AST on 128-bin log-mel, 16x16 patches every 10 bins / 10 frames
    audio_depth: int = 12
    audio_heads: int = 12
    n_mels: int = 128
    spec_frames: int = 66  # mel frames per 0.64 s segment (65 from the STFT, padded to 66)
    audio_stride: int = 10
    # the offset classifier over [OFF, video tokens, MOD, audio tokens]
    sync_depth: int = 3
    sync_heads: int = 8
    mlp_ratio: int = 4
    window: SyncWindow = WINDOW

    @property
    def video_tokens_per_segment(self) -> int:  # time steps left after the tubelet
        return self.window.frames_per_segment // self.tubelet

    @property
    def grid(self) -> int:  # patches per side of a frame
        return self.image_size // self.patch

    @property
    def audio_grid(self) -> tuple[int, int]:  # (frequency, time) patches of one segment's spectrogram
        return ((self.n_mels - self.patch) // self.audio_stride + 1,
                (self.spec_frames - self.patch) // self.audio_stride + 1)

    @property
    def sync_tokens(self) -> int:
        s = self.window.segments
        return 1 + s * self.video_tokens_per_segment + 1 + s * self.audio_grid[1]


RELEASE = SynchformerConfig()
assert RELEASE.audio_grid == (12, 6) and RELEASE.sync_tokens == 198  # the checkpoint's position table


def tiny_config(width: int = 32, heads: int = 2, depth: int = 1, image_size: int = 32) -> SynchformerConfig:
    """The released architecture, narrow and shallow (tests): same window, same token layout."""
    return SynchformerConfig(width=width, video_depth=depth, video_heads=heads, image_size=image_size,
                             audio_depth=depth, audio_heads=heads, sync_depth=depth, sync_heads=heads)
