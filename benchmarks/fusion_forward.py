"""Fusion-model forward latency and peak memory on CPU, float32 and bfloat16.

Mid config (configs/model/mid.yaml: dim 512, ffn 2048, 8 heads, 4 layers), video latent [48, 5, 16, 16]
(320 tokens), audio latent [40, 20], 100 text tokens, batch 1. Each dtype runs in its own process so
peak RSS is its own. Baseline measured in the same run: a dense matmul with the same FLOP count as the
forward (what this machine's BLAS does at best), so "efficiency" shows how close the model gets.
For scale, the issue quotes the reference implementation at ~0.3-0.5 s (fp32) and ~2.1 s (bf16) per
forward on an idle machine of this kind.

    python benchmarks/fusion_forward.py [--repeats 7] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
VIDEO_SHAPE, AUDIO_SHAPE, TEXT_TOKENS = (48, 5, 16, 16), (40, 20), 100


def _timeit(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def worker(dtype_name: str, repeats: int) -> dict:
    from ovi.config import load_fusion_config
    from ovi.models.fusion import FusionModel
    from ovi.models.stream import Stream

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    torch.manual_seed(0)
    model = FusionModel(load_fusion_config(REPO / "configs/model/mid.yaml")).to(dtype).eval()
    video = [torch.randn(VIDEO_SHAPE, dtype=dtype)]
    audio = [torch.randn(AUDIO_SHAPE, dtype=dtype)]
    ctx = [torch.randn(TEXT_TOKENS, 4096, dtype=dtype)]
    t = torch.tensor([700])

    def forward() -> None:
        with torch.inference_mode():
            model(Stream(video, t, ctx), Stream(audio, t, ctx))

    with FlopCounterMode(display=False) as counter:
        forward()
    flops = counter.get_total_flops()
    times = _timeit(forward, repeats)

    # Baseline: one nn.Linear-layout matmul (x @ W^T, as every projection runs) with the same FLOP count,
    # in the same dtype: the ceiling this machine's BLAS offers (bf16 has no native support on AVX2 CPUs).
    n = round((flops / 2) ** (1 / 3))
    x, w = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    gemm_times = _timeit(lambda: torch.nn.functional.linear(x, w), repeats)
    return {
        "dtype": dtype_name,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "gflop": flops / 1e9,
        "gemm_median_s": statistics.median(gemm_times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--worker", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats)))
        return
    print(f"fusion forward, mid config, video {VIDEO_SHAPE} audio {AUDIO_SHAPE} text {TEXT_TOKENS}, "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats after warm-up")
    print(f"{'dtype':6} {'median s':>9} {'min..max s':>14} {'GFLOP':>7} {'GFLOP/s':>8} "
          f"{'GEMM GFLOP/s':>13} {'efficiency':>10} {'peak RSS MB':>11}")
    for name in ("fp32", "bf16"):
        cmd = [sys.executable, __file__, "--worker", name, "--repeats", str(args.repeats)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        rate, gemm_rate = r["gflop"] / r["median_s"], r["gflop"] / r["gemm_median_s"]
        print(f"{name:6} {r['median_s']:9.3f} {r['min_s']:6.3f}..{r['max_s']:<6.3f} {r['gflop']:7.2f} {rate:8.1f} "
              f"{gemm_rate:13.1f} {rate / gemm_rate:10.0%} {r['peak_rss_mb']:11.0f}")


if __name__ == "__main__":
    main()
