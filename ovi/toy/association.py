"""Does a clip show a colour and sound that colour's knock? The toy LoRA's before/after measure (issue 11).

    python -m ovi.toy.association CLIPS_DIR --colour cyan [--json out.json]

Per clip, from the mp4 alone:
- ``colour_share``: of the object pixels (saturated: ``vision.SATURATION_MIN``), the share whose nearest colour
  among all the world's colours (``draw.COLOURS``, brightness normalised as ``draw.colour_name``) is ``colour``;
- ``pitch_share``: of the audio's spectral energy across every colour's knock band (``bounce.pitch_range``, a
  margin either side), the share inside ``colour``'s own band.
A model that never learned the colour scores near 0 on both; the real clips of that colour score near 1.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ovi.media import read_audio, read_video
from ovi.toy.clip import SAMPLE_RATE
from ovi.toy.draw import COLOURS
from ovi.toy.scenes.bounce import pitch_range
from ovi.toy.vision import SATURATION_MIN

BAND_MARGIN = 0.03  # relative: h264/AAC and the knock's decay smear a pitch by about this much


def _unit(rgb: np.ndarray) -> np.ndarray:
    return rgb / np.maximum(np.linalg.norm(rgb, axis=-1, keepdims=True), 1e-6)


def colour_share(frames: np.ndarray, colour: str) -> float:
    """``frames`` uint8 [T, H, W, 3] -> share of saturated pixels nearest to ``colour`` (NaN: none saturated)."""
    px = frames.reshape(-1, 3).astype(np.int16)
    px = px[(px.max(axis=1) - px.min(axis=1)) >= SATURATION_MIN].astype(np.float32)  # [P, 3]
    if len(px) == 0:
        return float("nan")
    names = list(COLOURS)
    ref = _unit(np.asarray([COLOURS[n] for n in names], np.float32))  # [C, 3]
    nearest = np.argmax(_unit(px) @ ref.T, axis=1)
    return float(np.mean(nearest == names.index(colour)))


def _band(colour: str) -> tuple[float, float]:
    lo, hi = pitch_range(colour)
    return lo * (1 - BAND_MARGIN), hi * (1 + BAND_MARGIN)


def pitch_share(audio: np.ndarray, colour: str, sample_rate: int = SAMPLE_RATE) -> float:
    """``audio`` float [N] -> share of the knock-band energy inside ``colour``'s band (NaN: silent bands)."""
    power = np.abs(np.fft.rfft(np.asarray(audio, np.float64))) ** 2
    hz = np.fft.rfftfreq(len(audio), 1.0 / sample_rate)
    bands = [_band(c) for c in COLOURS]
    lo, hi = min(b[0] for b in bands), max(b[1] for b in bands)
    total = power[(hz >= lo) & (hz <= hi)].sum()
    own_lo, own_hi = _band(colour)
    own = power[(hz >= own_lo) & (hz <= own_hi)].sum()
    return float(own / total) if total > 0 else float("nan")


def measure(folder: Path, colour: str) -> tuple[list[dict], dict]:
    """Per-clip rows and the means over the folder's mp4s."""
    videos = sorted(folder.glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no .mp4 files in {folder}")
    rows = []
    for video in tqdm(videos, desc=f"association {colour}", unit="clip"):
        frames, _ = read_video(video)
        audio = read_audio(video, SAMPLE_RATE)
        rows.append({"id": video.stem, "colour_share": colour_share(frames, colour),
                     "pitch_share": pitch_share(audio, colour)})
    summary = {"clips": len(rows), "colour": colour}
    for key in ("colour_share", "pitch_share"):
        values = [r[key] for r in rows if not np.isnan(r[key])]
        summary[key] = statistics.fmean(values) if values else float("nan")
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ovi.toy.association", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--colour", required=True, choices=list(COLOURS))
    p.add_argument("--json", type=Path, help="also write the rows and summary here")
    a = p.parse_args(argv)
    rows, summary = measure(a.folder, a.colour)
    for r in rows:
        print(f"{r['id']:<28} colour {r['colour_share']:.3f}  pitch {r['pitch_share']:.3f}")
    print("summary: " + json.dumps(summary))
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
