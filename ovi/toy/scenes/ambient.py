"""Ambient: a still or slowly drifting view (sky, hills, room) with a steady sound bed (hum, wind, rain) and
no audible or visible events. Motion is at most a few pixels over the whole clip."""
from __future__ import annotations

import numpy as np

from ovi.toy import draw, sounds
from ovi.toy.clip import NUM_FRAMES

KIND = "ambient"
SOUNDS = {"hum": sounds.hum, "wind": sounds.wind, "rain": sounds.rain}
VIEWS = ("sky", "hills", "room")
MAX_DRIFT_FRACTION = 0.08  # total drift over the clip as a fraction of the frame side


def _sky(frames: np.ndarray, rng: np.random.Generator, drift: np.ndarray) -> None:
    size = frames.shape[1]
    top, bottom = np.array([70, 110, 190], np.float32), np.array([180, 205, 235], np.float32)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    frames[:] = top + (bottom - top) * ramp  # [H, 1, 3] broadcast over frames and columns
    for _ in range(int(rng.integers(1, 4))):  # clouds drifting sideways together
        cy, cx = rng.uniform(0.1, 0.35) * size, rng.uniform(0.1, 0.9) * size
        cover = draw.ellipse_coverage(NUM_FRAMES, size, cy, cx + drift, 0.06 * size, rng.uniform(0.12, 0.2) * size)
        draw.blend(frames, cover * 0.9, (245, 245, 248))


def _hills(frames: np.ndarray, rng: np.random.Generator, drift: np.ndarray) -> None:
    _sky(frames, rng, drift * 0.3)
    size = frames.shape[1]
    xs = np.arange(size, dtype=np.float32)[None, :] - drift[:, None]  # [T, W] the hills slide slowly
    ridge = size * (0.62 + 0.08 * np.sin(2 * np.pi * xs / size * rng.uniform(1.0, 2.0) + rng.uniform(0, 6.3)))
    ys = np.arange(size, dtype=np.float32)[None, :, None]
    cover = np.clip(ys + 0.5 - ridge[:, None, :], 0.0, 1.0)  # [T, H, W] below the ridge line
    draw.blend(frames, cover, (70, 120, 60))


def _room(frames: np.ndarray, rng: np.random.Generator, drift: np.ndarray) -> None:
    size = frames.shape[1]
    frames[:] = draw.BACKDROPS[str(rng.choice(["beige", "grey", "white"]))]
    frames[:, int(size * 0.75):] = (110, 84, 60)  # wooden floor
    # A window whose light slowly brightens and dims: the only change in the room.
    light = 1.0 + 0.05 * np.sin(2 * np.pi * np.arange(NUM_FRAMES) / NUM_FRAMES + rng.uniform(0, 6.3))
    cover = draw.box_coverage(NUM_FRAMES, size, 0.35 * size, rng.uniform(0.3, 0.7) * size, 0.14 * size)
    draw.blend(frames, cover, (170, 200, 230), light)


def render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    view, sound = str(rng.choice(VIEWS)), str(rng.choice(list(SOUNDS)))
    speed = rng.uniform(-1.0, 1.0) * MAX_DRIFT_FRACTION * size / NUM_FRAMES  # pixels per frame
    drift = (np.arange(NUM_FRAMES, dtype=np.float32) * speed).astype(np.float32)
    frames = draw.canvas(NUM_FRAMES, size, (0, 0, 0))
    {"sky": _sky, "hills": _hills, "room": _room}[view](frames, rng, drift)
    audio = SOUNDS[sound](rng)
    truth = {"kind": KIND, "objects": [], "count": 0, "events": [], "view": view, "sound": sound,
             "drift_px_per_frame": round(float(speed), 4)}
    return draw.to_uint8(frames), sounds.normalise(audio), truth
