"""Sampling tiers on the shipped toy model: time, decoded-frame PSNR, waveform error and the toy metrics per tier.

    python benchmarks/toy_tiers.py [--clips 16] [--tiers dtype=bfloat16 dtype=bfloat16,quantize=int8 ...] \
        [--out runs/bench_toy_tiers]

Makes a held-out toy world (``ovi-toy make --seed 1``, the sync proof's prompts) and generates one clip per caption
for each tier: a comma-separated list of ``ovi-generate`` keys (``InferenceConfig`` fields). The first tier is the
baseline, measured in the same run. Per tier: seconds per clip (median over the run), PSNR of the decoded frames
and rel_l2 of the waveform against the baseline's clip of the same caption and seed, and ``ovi-toy score``'s share
of visual events with a sound within +-1 frame and kind accuracy. Clips are kept in ``--out`` (resumable; delete
it to re-time). The default tiers: every memory and speed option against plain bf16 (the toy preset's own dtype,
float32, included as a row).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ovi.config import InferenceConfig  # noqa: E402
from ovi.media import read_audio, read_video  # noqa: E402
from ovi.toy.cli import make  # noqa: E402
from ovi.toy.clip import SAMPLE_RATE  # noqa: E402
from ovi.toy.codecs import psnr  # noqa: E402
from ovi.toy.evaluate import generate_folder, score_folder, toy_config  # noqa: E402

BF16 = "dtype=bfloat16"
DEFAULT_TIERS = [BF16, "dtype=float32"] + [f"{BF16},{t}" for t in (
    "quantize=fp8", "quantize=fp8_scaled", "quantize=int8", "offload_blocks=1", "batch_cfg=false",
    "step_cache=0.2", "step_cache=0.5", "step_cache=1")]


def parse_tier(tier: str, release: Path) -> InferenceConfig:
    """'dtype=bfloat16,quantize=int8' -> the toy preset with those settings (OmegaConf's dotlist, as ovi-generate
    reads key=value overrides), built here so a bad tier is named before anything loads."""
    try:
        settings = OmegaConf.to_container(OmegaConf.from_dotlist([i for i in tier.split(",") if i]))
        return toy_config(release, **settings)
    except Exception as e:  # noqa: BLE001 - one line naming the tier, whatever the parser or the config raised
        raise SystemExit(f"tier {tier!r}: {e} (give ovi-generate keys, e.g. dtype=bfloat16,quantize=int8)") from e


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", type=Path, default=REPO / "checkpoints/toy")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--tiers", nargs="+", default=DEFAULT_TIERS, help="comma-separated key=value lists; first = baseline")
    ap.add_argument("--out", type=Path, default=REPO / "runs/bench_toy_tiers")
    a = ap.parse_args()
    configs = [parse_tier(t, a.release) for t in a.tiers]
    prompts = a.out / "prompts"
    make(prompts, a.clips, seed=1, size=64, kinds=["bounce", "flash", "face", "ambient"])
    folders = [a.out / f"tier_{i:02d}" for i in range(len(a.tiers))]
    seconds = []
    for folder, cfg in zip(folders, configs):
        start = time.perf_counter()
        generate_folder(cfg, prompts, folder, a.clips)
        seconds.append((time.perf_counter() - start) / a.clips)
    print(f"\ntoy model, {a.clips} held-out captions, seed 0 each; against the first tier ({a.tiers[0]})\n")
    print("| tier | s/clip | frame PSNR dB (median) | audio rel_l2 (median) | share within +-1 frame | kind right |")
    print("|---|---|---|---|---|---|")
    baseline = {clip.name: (read_video(clip)[0], read_audio(clip, SAMPLE_RATE)) for clip in folders[0].glob("*.mp4")}
    for tier, folder, sec in zip(a.tiers, folders, seconds):
        db, rel = [], []
        for clip in sorted(folder.glob("*.mp4")):
            frames, y = baseline[clip.name]
            db.append(psnr(read_video(clip)[0], frames, peak=255.0))
            x = read_audio(clip, SAMPLE_RATE)
            rel.append(float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-12)))
        s = score_folder(folder)
        print(f"| {tier} | {sec:.2f} | {statistics.median(db):.1f} | {statistics.median(rel):.3f} | "
              f"{s['share_matched']:.2f} | {s['kind_ok']:.2f} |")


if __name__ == "__main__":
    main()
