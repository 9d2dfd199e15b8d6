"""What every toy scene returns, and the clip geometry the toy world renders at.

Event times are chosen on the video frame grid (an impact lands exactly when frame k is shown), so the
ground truth is exact in both streams: frame k, time k / fps, sample round(k * sample_rate / fps).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ovi.geometry import FIVE_SECOND

# The training clip (121 frames at 24 fps, 16 kHz mono); the audio spans the video exactly, as the data
# pipeline's split cuts it.
FPS = FIVE_SECOND.fps
NUM_FRAMES = FIVE_SECOND.num_frames
SAMPLE_RATE = FIVE_SECOND.sample_rate
NUM_SAMPLES = round(FIVE_SECOND.duration_s * SAMPLE_RATE)  # 80,667

# Audible events are at least this many frames apart (5 frames = 208 ms), so every visual event has one
# unambiguous audio partner within the +-1 frame match window.
MIN_EVENT_GAP_FRAMES = 5
# Events are kept off the first/last frames: a detector needs a frame on each side of an event.
EVENT_EDGE_FRAMES = 2
SIZES = (64, 128)  # the frame sides the world is drawn and tested at


def frame_to_sample(frame: int) -> int:
    """The audio sample shown with video frame ``frame`` (rounded to the nearest sample)."""
    return round(frame * SAMPLE_RATE / FPS)


def event_record(frame: int, obj: int) -> dict:
    """One ground-truth event: the frame it is seen on, its exact sample and time, and which object made it."""
    sample = frame_to_sample(frame)
    return {"frame": int(frame), "sample": int(sample), "time_s": sample / SAMPLE_RATE, "object": int(obj)}


@dataclass
class ToyClip:
    """A rendered clip. ``frames``: uint8 [NUM_FRAMES, H, W, 3]; ``audio``: float32 [NUM_SAMPLES] in [-1, 1];
    ``truth``: the JSON-ready ground truth (kind, objects, events, caption, ...), see ``world.make_clip``."""

    frames: np.ndarray
    audio: np.ndarray
    truth: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        t, h, w, c = self.frames.shape
        if (t, c) != (NUM_FRAMES, 3) or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [{NUM_FRAMES}, H, W, 3], "
                             f"got {self.frames.dtype} {self.frames.shape}")
        if self.audio.shape != (NUM_SAMPLES,):
            raise ValueError(f"audio must be [{NUM_SAMPLES}] samples, got {self.audio.shape}")
