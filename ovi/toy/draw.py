"""Vectorised drawing on whole clips at once: anti-aliased discs, ellipses and boxes over [T, H, W, 3].

Every primitive computes a coverage map in [0, 1] for all frames in one numpy expression (shapes broadcast
per frame), then blends a colour in; no per-pixel Python loops. Canvases are float32 RGB in 0..255.
"""
from __future__ import annotations

import numpy as np

# Object colours: saturated, far apart in RGB, so the metric can name them back from compressed pixels.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 235),
    "purple": (150, 50, 210),
}
# Colours the default world never draws: a fine-tuning target the shipped model has not seen (the toy LoRA
# teaches one: `ovi-toy make --colours cyan`). Kept out of PALETTE so the default world stays as it was.
HELD_OUT: dict[str, tuple[int, int, int]] = {
    "cyan": (20, 200, 210),
}
COLOURS: dict[str, tuple[int, int, int]] = {**PALETTE, **HELD_OUT}
# Backgrounds and floors: neutral (unsaturated), so they never read as an object colour.
BACKDROPS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "dark grey": (62, 62, 62),
    "charcoal": (34, 34, 38),
    "beige": (196, 188, 170),
    "white": (232, 232, 232),
}


def canvas(num_frames: int, size: int, rgb: tuple[int, int, int]) -> np.ndarray:
    """A float32 [T, size, size, 3] canvas filled with ``rgb``."""
    out = np.empty((num_frames, size, size, 3), np.float32)
    out[...] = rgb
    return out


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    return ys, xs


def _per_frame(v: float | np.ndarray, num_frames: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(v, np.float32), (num_frames,))[:, None, None]  # [T, 1, 1]


def ellipse_coverage(num_frames: int, size: int, cy: float | np.ndarray, cx: float | np.ndarray,
                     ry: float | np.ndarray, rx: float | np.ndarray) -> np.ndarray:
    """[T, size, size] coverage of an axis-aligned ellipse per frame (centres/radii scalars or [T])."""
    ys, xs = _grid(size)
    cy, cx = _per_frame(cy, num_frames), _per_frame(cx, num_frames)
    ry = np.maximum(_per_frame(ry, num_frames), 1e-3)
    rx = np.maximum(_per_frame(rx, num_frames), 1e-3)
    # Normalised radius, scaled back to pixels along the smaller axis: a ~1 px soft edge (anti-aliasing).
    rho = np.sqrt(((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2)
    return np.clip((1.0 - rho) * np.minimum(ry, rx) + 0.5, 0.0, 1.0)


def disc_coverage(num_frames: int, size: int, cy: float | np.ndarray, cx: float | np.ndarray,
                  r: float | np.ndarray) -> np.ndarray:
    """[T, size, size] coverage of a disc of radius ``r`` centred at (cy, cx) per frame."""
    return ellipse_coverage(num_frames, size, cy, cx, r, r)


def box_coverage(num_frames: int, size: int, cy: float | np.ndarray, cx: float | np.ndarray,
                 half: float | np.ndarray) -> np.ndarray:
    """[T, size, size] coverage of an axis-aligned square of half-side ``half`` centred at (cy, cx) per frame."""
    ys, xs = _grid(size)
    cy, cx, half = (_per_frame(v, num_frames) for v in (cy, cx, half))
    return np.clip(half + 0.5 - np.maximum(np.abs(ys - cy), np.abs(xs - cx)), 0.0, 1.0)


def blend(frames: np.ndarray, coverage: np.ndarray, rgb: tuple[int, int, int] | np.ndarray,
          gain: float | np.ndarray = 1.0) -> None:
    """In place: ``frames`` <- mix of ``frames`` and ``rgb * gain`` (gain scalar or per frame [T])."""
    colour = np.asarray(rgb, np.float32) * np.asarray(gain, np.float32).reshape(-1, 1, 1, 1)  # [T or 1, 1, 1, 3]
    a = coverage[..., None]
    frames *= 1.0 - a
    frames += a * colour


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def colour_name(rgb: np.ndarray) -> str:
    """The palette colour nearest to ``rgb`` after normalising brightness (a dim red is still red)."""
    names = list(PALETTE)
    ref = np.asarray([PALETTE[n] for n in names], np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    v = np.asarray(rgb, np.float32)
    v = v / max(float(np.linalg.norm(v)), 1e-6)
    return names[int(np.argmax(ref @ v))]
