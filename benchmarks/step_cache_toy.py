"""Step caching on the shipped toy model: time, decoded-frame PSNR and the toy metrics per threshold.

    python benchmarks/step_cache_toy.py [--clips 16] [--thresholds 0 0.2 0.5 1] [--out runs/bench_step_cache]

Makes a held-out toy world (``ovi-toy make --seed 1``, the sync proof's prompts), generates one clip per caption
at each ``step_cache`` threshold (threshold 0 = uncached, the baseline measured in the same run), and prints per
threshold: seconds per clip (median), PSNR of the decoded frames and rel_l2 of the waveform against the uncached
clip of the same caption and seed, and ``ovi-toy score``'s share of visual events with a sound within +-1 frame
and kind accuracy. Clips are kept in ``--out`` (resumable; delete it to re-time).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ovi.media import read_audio, read_video  # noqa: E402
from ovi.toy.cli import make  # noqa: E402
from ovi.toy.clip import SAMPLE_RATE  # noqa: E402
from ovi.toy.codecs import psnr  # noqa: E402
from ovi.toy.evaluate import generate_folder, score_folder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", type=Path, default=REPO / "checkpoints/toy")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.2, 0.5, 1.0])
    ap.add_argument("--out", type=Path, default=REPO / "runs/bench_step_cache")
    a = ap.parse_args()
    if a.thresholds[0] != 0.0:
        a.thresholds.insert(0, 0.0)  # the uncached baseline comes first
    prompts = a.out / "prompts"
    make(prompts, a.clips, seed=1, size=64, kinds=["bounce", "flash", "face", "ambient"])
    seconds: dict[float, float] = {}
    for th in a.thresholds:
        folder = a.out / f"cache_{th:g}"
        start = time.perf_counter()
        generate_folder(a.release, prompts, folder, a.clips, step_cache=th)
        seconds[th] = (time.perf_counter() - start) / a.clips
    print(f"\ntoy model, {a.clips} held-out captions, seed 0 each; against threshold 0 (uncached)\n")
    print("| threshold | s/clip | frame PSNR dB (median) | audio rel_l2 (median) | share within +-1 frame | kind right |")
    print("|---|---|---|---|---|---|")
    base = a.out / "cache_0"
    for th in a.thresholds:
        folder = a.out / f"cache_{th:g}"
        db, rel = [], []
        for clip in sorted(folder.glob("*.mp4")):
            db.append(psnr(read_video(clip)[0], read_video(base / clip.name)[0], peak=255.0))
            x, y = read_audio(clip, SAMPLE_RATE), read_audio(base / clip.name, SAMPLE_RATE)
            rel.append(float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-12)))
        s = score_folder(folder)
        print(f"| {th:g} | {seconds[th]:.2f} | {statistics.median(db):.1f} | {statistics.median(rel):.3f} | "
              f"{s['share_matched']:.2f} | {s['kind_ok']:.2f} |")


if __name__ == "__main__":
    main()
