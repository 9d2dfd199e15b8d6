"""Pixel analysis of toy clips, from frames alone: objects, their lanes, colours, motion and visual events.

The toy world draws its objects in saturated palette colours on neutral backdrops, so an object pixel is a
saturated one (max - min channel >= ``SATURATION_MIN``). Objects keep to vertical lanes (balls hop in place,
lamps stand in a row), so a lane is a run of columns that hold object pixels at some time. Per lane:

- ``heights``: the row centroid of its object pixels per frame (bounces: a ball's lowest points are contacts);
- ``luma``: the mean brightness of the pixels that were ever object pixels in the lane (flashes: jumps).

The face's mouth is found as the compact region whose brightness changes most over time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, label

from ovi.toy.draw import colour_name

SATURATION_MIN = 50  # neutral backdrops stay below ~30 after h264; palette colours are above 150
LANE_MIN_SHARE = 0.02  # a column belongs to a lane when it holds this share of the busiest column's pixels
LANE_MIN_WIDTH = 2  # pixels
CONTACT_DEPTH = 0.04  # a contact rises this much of the frame height within CONTACT_SPAN frames both ways
CONTACT_SPAN = 3
CONTACT_NEAR_FLOOR = 0.12  # ... and lies within this share of the frame height of the lane's lowest point
FLASH_RISE_SHARE = 0.35  # a flash brightens the lane by this share of its full brightness range
FLASH_RISE_MIN = 8.0  # ... and by at least this many 8-bit levels
MOUTH_STD_SHARE = 0.4  # mouth pixels: temporal std above this share of the clip's largest


def luma(frames: np.ndarray) -> np.ndarray:
    """[T, H, W] float32 Rec. 601 luma of uint8 RGB frames."""
    return frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def object_mask(frames: np.ndarray) -> np.ndarray:
    """[T, H, W] bool: pixels saturated enough to be a palette-coloured object."""
    return (frames.max(axis=-1).astype(np.int16) - frames.min(axis=-1)) >= SATURATION_MIN


@dataclass
class Lane:
    x0: int  # first column
    x1: int  # one past the last column
    heights: np.ndarray  # [T] row centroid of object pixels (NaN where the lane has none)
    luma: np.ndarray  # [T] mean luma of the lane's ever-object pixels
    colour: str  # palette name of its object pixels (at the brightest frames)
    area: float  # mean object pixels per frame, as a share of the frame


def lanes(frames: np.ndarray, mask: np.ndarray | None = None) -> list[Lane]:
    """The object lanes of a clip, left to right."""
    mask = object_mask(frames) if mask is None else mask
    t, h, w = mask.shape
    per_column = mask.sum(axis=(0, 1))  # [W]
    if per_column.max() == 0:
        return []
    busy = per_column >= LANE_MIN_SHARE * per_column.max()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], busy.astype(np.int8), [0]])))
    y = np.arange(h, dtype=np.float32)[None, :]
    lum = luma(frames)
    out = []
    for x0, x1 in zip(edges[::2], edges[1::2]):
        if x1 - x0 < LANE_MIN_WIDTH:
            continue
        m = mask[:, :, x0:x1]  # [T, H, w]
        rows = m.sum(axis=2).astype(np.float32)  # [T, H] object pixels per row
        count = rows.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            heights = np.where(count > 0, (rows * y).sum(axis=1) / count, np.nan)
        ever = m.any(axis=0)  # [H, w]
        lane_luma = lum[:, :, x0:x1][:, ever].mean(axis=1)
        bright = lane_luma >= np.percentile(lane_luma, 90)
        pixels = frames[:, :, x0:x1][bright][m[bright]].astype(np.int16)  # [P, 3] object pixels, brightest frames
        if len(pixels) == 0:  # the object is absent in the brightest frames (generated clips can do that)
            continue
        sat = pixels.max(axis=1) - pixels.min(axis=1)
        core = pixels[sat >= np.percentile(sat, 75)]  # rims of small objects mix with the backdrop (h264 chroma)
        out.append(Lane(int(x0), int(x1), heights, lane_luma, colour_name(np.median(core, axis=0)),
                        float(count.mean()) / (h * w)))
    return out


def contact_frames(lane: Lane, frame_height: int) -> np.ndarray:
    """Frames where the lane's object reaches a low point and turns back up (a bounce on the floor)."""
    y = lane.heights
    if np.all(np.isnan(y)):
        return np.zeros(0, np.int64)
    y = np.where(np.isnan(y), np.nanmin(y), y)  # an empty frame counts as high up, never as a contact
    floor = y.max()
    found = []
    for t in range(1, len(y) - 1):
        lo, hi = max(0, t - CONTACT_SPAN), min(len(y), t + CONTACT_SPAN + 1)
        if not (y[t] >= y[t - 1] and y[t] > y[t + 1]):
            continue
        rise = CONTACT_DEPTH * frame_height
        turns = y[t] - y[lo:t].min() >= rise and y[t] - y[t + 1:hi].min() >= rise
        if turns and floor - y[t] <= CONTACT_NEAR_FLOOR * frame_height:
            found.append(t)
    return np.asarray(found, np.int64)


def flash_frames(lane: Lane) -> np.ndarray:
    """Frames where the lane brightens sharply (a lamp switching on)."""
    rise = np.diff(lane.luma, prepend=lane.luma[0])
    need = max(FLASH_RISE_MIN, FLASH_RISE_SHARE * float(lane.luma.max() - lane.luma.min()))
    nxt = np.append(rise[1:], -np.inf)
    prev = np.concatenate([[-np.inf], rise[:-1]])
    return np.flatnonzero((rise >= need) & (rise >= prev) & (rise > nxt)).astype(np.int64)


def vertical_travel(lane: Lane, frame_height: int) -> float:
    """How far the lane's object moves up and down, as a share of the frame height (5th-95th percentile)."""
    y = lane.heights[~np.isnan(lane.heights)]
    return float(np.percentile(y, 95) - np.percentile(y, 5)) / frame_height if y.size else 0.0


def mouth_opening(frames: np.ndarray) -> np.ndarray:
    """[T] darkness of the region that changes most over time (the mouth of a face scene), in 8-bit levels."""
    lum = luma(frames)
    std = lum.std(axis=0)  # [H, W]
    if std.max() <= 0:
        return np.zeros(len(frames), np.float32)
    regions, n = label(std >= MOUTH_STD_SHARE * std.max())
    if n == 0:
        return np.zeros(len(frames), np.float32)
    sizes = np.bincount(regions.ravel())[1:]
    region = binary_dilation(regions == 1 + int(np.argmax(sizes)), iterations=1)  # take the mouth's rim too
    return (255.0 - lum[:, region]).mean(axis=1)
