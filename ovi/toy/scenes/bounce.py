"""Bounce: one to three balls hop on a floor, each in its own lane; every floor contact is an impact sound.

A ball's height between two contacts is a parabola whose apex grows with the square of the time between them
(constant gravity), so contacts land exactly on frames and the lowest drawn position is the contact frame.
The knock's pitch follows the ball's colour and size (``sounds.COLOUR_PITCH_HZ``, ``sounds.REFERENCE_RADIUS``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ovi.toy import draw, sounds
from ovi.toy.clip import NUM_FRAMES, NUM_SAMPLES, event_record
from ovi.toy.scenes.schedule import in_clip, spaced_events

KIND = "bounce"
GAP_FRAMES = (12, 22)  # frames between two contacts of one ball (0.5 to 0.9 s)
RADIUS_FRACTION = (0.06, 0.1)  # ball radius as a fraction of the frame side
FLOOR_FRACTION = 0.14  # floor band height as a fraction of the frame side
SAME_COLOUR_CHANCE = 0.3  # "two red balls" as well as "a red ball and a blue ball"


def heights(contacts: np.ndarray, max_height: float) -> np.ndarray:
    """[NUM_FRAMES] height above the floor for a ball that touches it at ``contacts`` (frames, increasing)."""
    t = np.arange(NUM_FRAMES, dtype=np.float32)
    k = np.clip(np.searchsorted(contacts, t, side="right") - 1, 0, len(contacts) - 2)  # the arc t lies on
    c0, c1 = contacts[k].astype(np.float32), contacts[k + 1].astype(np.float32)
    u = (t - c0) / (c1 - c0)
    apex = max_height * np.minimum(1.0, ((c1 - c0) / GAP_FRAMES[1]) ** 2)
    return apex * 4.0 * u * (1.0 - u)


def impact_pitch(colour: str, radius: float, size: float = 1.0) -> float:
    """Hz of the knock of a ball of ``radius`` in a frame of side ``size``: its colour's pitch, lower when bigger."""
    return sounds.COLOUR_PITCH_HZ[colour] * (sounds.REFERENCE_RADIUS * size / radius) ** 0.5


def pitch_range(colour: str) -> tuple[float, float]:
    """(lowest, highest) knock pitch a ball of ``colour`` can have over the radius range."""
    return impact_pitch(colour, RADIUS_FRACTION[1]), impact_pitch(colour, RADIUS_FRACTION[0])


def render(rng: np.random.Generator, size: int, palette: Sequence[str] = tuple(draw.PALETTE)
           ) -> tuple[np.ndarray, np.ndarray, dict]:
    """``palette``: the colour names balls are drawn from (default: the palette; draw.HELD_OUT for fine-tuning)."""
    n = int(rng.integers(1, 4))
    names = list(palette)
    if n > 1 and (len(names) == 1 or rng.random() < SAME_COLOUR_CHANCE):
        colours = [names[rng.integers(len(names))]] * n
    else:
        colours = [names[i] for i in rng.choice(len(names), n, replace=False)]
    backdrop, floor = rng.choice(list(draw.BACKDROPS), 2, replace=False)
    floor_top = size * (1.0 - FLOOR_FRACTION)
    frames = draw.canvas(NUM_FRAMES, size, draw.BACKDROPS[backdrop])
    frames[:, int(round(floor_top)):] = draw.BACKDROPS[floor]
    audio = sounds.noise_bed(rng)
    lane = size / n
    objects, events = [], []
    schedules = spaced_events(rng, n, GAP_FRAMES, lead_frames=GAP_FRAMES[1])
    for i, (colour, contacts) in enumerate(zip(colours, schedules)):
        r = float(rng.uniform(*RADIUS_FRACTION)) * size
        # The lane centre sways a little, never leaving its lane.
        sway = max(0.0, lane / 2 - r - 1.5) * 0.6
        phase = rng.uniform(0, 2 * np.pi)
        cx = (i + 0.5) * lane + sway * np.sin(2 * np.pi * np.arange(NUM_FRAMES) / NUM_FRAMES + phase)
        cy = floor_top - r - heights(contacts, max_height=floor_top - 2.0 * r - 0.08 * size)
        draw.blend(frames, draw.disc_coverage(NUM_FRAMES, size, cy, cx, r), draw.COLOURS[colour])
        pitch = impact_pitch(colour, r, size)
        for f in in_clip(contacts):
            ev = event_record(int(f), i)
            sounds.place(audio, sounds.impact(pitch, rng), ev["sample"], gain=float(rng.uniform(0.7, 1.0)))
            events.append(ev)
        objects.append({"colour": colour, "radius_px": round(r, 2), "pitch_hz": round(pitch, 1)})
    assert len(audio) == NUM_SAMPLES
    events.sort(key=lambda e: e["sample"])
    truth = {"kind": KIND, "objects": objects, "count": n, "events": events,
             "background": str(backdrop), "floor": str(floor)}
    return draw.to_uint8(frames), sounds.normalise(audio), truth
