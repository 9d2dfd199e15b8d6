"""Fréchet distance time and agreement: ``ovi.eval.stats.frechet_distance_features`` against the [D, D] matrix
square root it replaces for evaluation sets with fewer clips than embedding dimensions, in the same run.

For each (clips, dims) case two random embedding sets are scored both ways (median of ``--repeats``):

- ``sqrtm``: Gaussian statistics, then scipy's square root of the [D, D] covariance product (the baseline);
- ``features``: what ovi-eval runs: with min(N, M) <= D the nuclear norm of the [N, M] sample product
  (ovi/eval/stats.py says why it is exact), else the baseline itself.

    python benchmarks/eval_fd.py [--cases 2x2048 52x2048 52x400 600x400] [--repeats 3]
    OMP_NUM_THREADS=1 python benchmarks/eval_fd.py      # on a busy machine: one BLAS thread
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

from ovi.eval.stats import frechet_distance, frechet_distance_features, gaussian_stats  # noqa: E402


def case(text: str) -> tuple[int, int]:
    try:
        clips, dims = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give CLIPSxDIMS, e.g. 52x2048") from None
    if clips < 2 or dims < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: need at least 2 clips (a covariance) and 1 dimension")
    return clips, dims


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median seconds, value) over ``repeats`` calls."""
    times, value = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", type=case, default=[(2, 2048), (52, 2048), (52, 400), (600, 400)],
                        help="CLIPSxDIMS: clips per set and embedding width (PANNs 2048, I3D 400)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"{'clips x dims':>13} | {'sqrtm (s)':>9} | {'features (s)':>12} | {'speed-up':>8} | FD rel. difference")
    for clips, dims in args.cases:
        rng = np.random.default_rng(clips * 7919 + dims)
        a = rng.normal(size=(clips, dims))
        b = 0.8 * rng.normal(size=(clips, dims)) + 0.3
        base_s, base = timed(lambda: frechet_distance(*gaussian_stats(a), *gaussian_stats(b)), args.repeats)
        new_s, new = timed(lambda: frechet_distance_features(a, b), args.repeats)
        print(f"{clips:>6} x {dims:<4} | {base_s:9.3f} | {new_s:12.4f} | {base_s / new_s:7.1f}x | "
              f"{abs(new - base) / base:.1e}")


if __name__ == "__main__":
    main()
