"""Flash: one to three lamps in a row light up at known frames and fade; each flash sounds a beep whose
pitch is the lamp colour's (``sounds.COLOUR_PITCH_HZ``). A lamp is dim (``OFF_LEVEL``) between flashes."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ovi.toy import draw, sounds
from ovi.toy.clip import NUM_FRAMES, event_record
from ovi.toy.scenes.schedule import in_clip, spaced_events

KIND = "flash"
GAP_FRAMES = (10, 30)  # frames between two flashes of one lamp (0.4 to 1.25 s)
OFF_LEVEL = 0.25  # lamp brightness between flashes, relative to its colour
FADE_FRAMES = 1.5  # exponential fade time constant of a flash, in frames
RADIUS_FRACTION = (0.08, 0.12)
SHAPES = ("round", "square")
DARK_BACKDROPS = ("charcoal", "dark grey")  # lamps read best on a dark wall


def brightness(flashes: np.ndarray) -> np.ndarray:
    """[NUM_FRAMES] lamp gain: full at each flash frame, fading back to ``OFF_LEVEL``."""
    t = np.arange(NUM_FRAMES, dtype=np.float32)[:, None]
    since = t - flashes[None, :].astype(np.float32)  # [T, flashes] frames since each flash
    lit = np.where(since >= 0, np.exp(-np.maximum(since, 0) / FADE_FRAMES), 0.0).max(axis=1)
    return OFF_LEVEL + (1.0 - OFF_LEVEL) * lit


def render(rng: np.random.Generator, size: int, palette: Sequence[str] = tuple(draw.PALETTE)
           ) -> tuple[np.ndarray, np.ndarray, dict]:
    """``palette``: the colour names lamps are drawn from (default: the palette)."""
    names = list(palette)
    n = min(int(rng.integers(1, 4)), len(names))  # lamps differ in colour
    colours = [names[i] for i in rng.choice(len(names), n, replace=False)]
    shape = str(rng.choice(SHAPES))
    backdrop = str(rng.choice(DARK_BACKDROPS))
    frames = draw.canvas(NUM_FRAMES, size, draw.BACKDROPS[backdrop])
    audio = sounds.noise_bed(rng)
    lane = size / n
    cy = size * float(rng.uniform(0.35, 0.65))
    objects, events = [], []
    for i, (colour, flashes) in enumerate(zip(colours, spaced_events(rng, n, GAP_FRAMES))):
        r = min(float(rng.uniform(*RADIUS_FRACTION)) * size, lane / 2 - 2)
        cx = (i + 0.5) * lane
        primitive = draw.disc_coverage if shape == "round" else draw.box_coverage
        cover = np.broadcast_to(primitive(1, size, cy, cx, r), (NUM_FRAMES, size, size))  # a lamp does not move
        draw.blend(frames, cover, draw.COLOURS[colour], brightness(flashes))
        pitch = sounds.COLOUR_PITCH_HZ[colour]
        for f in in_clip(flashes):
            ev = event_record(int(f), i)
            sounds.place(audio, sounds.tone(pitch), ev["sample"], gain=float(rng.uniform(0.6, 1.0)))
            events.append(ev)
        objects.append({"colour": colour, "radius_px": round(r, 2), "pitch_hz": pitch, "shape": shape})
    events.sort(key=lambda e: e["sample"])
    truth = {"kind": KIND, "objects": objects, "count": n, "events": events, "background": backdrop}
    return draw.to_uint8(frames), sounds.normalise(audio), truth
