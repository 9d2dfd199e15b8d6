"""Event schedules shared by the event scenes: per-object event frames, globally spaced apart."""
from __future__ import annotations

import numpy as np

from ovi.toy.clip import EVENT_EDGE_FRAMES, MIN_EVENT_GAP_FRAMES, NUM_FRAMES


def spaced_events(rng: np.random.Generator, num_objects: int, gap_frames: tuple[int, int],
                  lead_frames: int = 0) -> list[np.ndarray]:
    """For each object, increasing event frames with gaps drawn from ``gap_frames`` (inclusive), running from
    before frame 0 to past the last frame (``lead_frames`` of margin), such that no two events of any objects
    inside the clip are closer than ``MIN_EVENT_GAP_FRAMES``. A clash is resolved by delaying the later event
    frame by frame, which keeps the schedule deterministic."""
    taken: list[int] = []
    out = []
    lo, hi = gap_frames
    for _ in range(num_objects):
        t = -int(rng.integers(0, hi + 1)) - lead_frames
        frames = []
        while t < NUM_FRAMES + lead_frames:
            while _forbidden(t, taken):
                t += 1
            if 0 <= t < NUM_FRAMES:
                taken.append(t)
            frames.append(t)
            t += int(rng.integers(lo, hi + 1))
        out.append(np.asarray(frames, np.int64))
    return out


def _forbidden(t: int, taken: list[int]) -> bool:
    """Frames where no event may land: the clip's edge frames (a detector needs a frame on each side) and
    the neighbourhood of events already placed."""
    if 0 <= t < EVENT_EDGE_FRAMES or NUM_FRAMES - EVENT_EDGE_FRAMES <= t < NUM_FRAMES:
        return True
    return 0 <= t < NUM_FRAMES and any(abs(t - u) < MIN_EVENT_GAP_FRAMES for u in taken)

def in_clip(frames: np.ndarray) -> np.ndarray:
    """The event frames inside the clip (``spaced_events`` keeps them off its edge frames)."""
    return frames[(frames >= 0) & (frames < NUM_FRAMES)]
