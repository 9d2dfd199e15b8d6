"""Data pipeline throughput: clips/s per stage next to ffmpeg alone decoding the same files.

    python benchmarks/data_pipeline.py [--videos 6] [--seconds 11] [--size 320x180] [--workers 1]

Generates the videos (two scenes each, 30 fps, tone audio), times ``ffmpeg -i f -f null -`` over them (the
floor any pipeline pays to read its input), then runs the pipeline (local engine; captions from the loopback
test server, so the caption figure is our overhead, not a model's) and prints each stage's rate.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_pipeline import media, synth  # noqa: E402
from data_pipeline.config import load_data_config  # noqa: E402
from data_pipeline.fake_caption_server import FakeCaptionServer  # noqa: E402
from data_pipeline.runner import run_pipeline  # noqa: E402


def ffmpeg_decode_seconds(files: list[Path]) -> float:
    start = time.perf_counter()
    for f in files:
        media.run_ffmpeg(["-i", str(f), "-f", "null", "-"])
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--seconds", type=float, default=11.0, help="length of each video (two equal scenes)")
    p.add_argument("--size", default="320x180")
    p.add_argument("--workers", type=int, default=1,
                   help="1 runs stages in-process (no worker start-up in the figures); more use a process pool")
    p.add_argument("--workdir", type=Path, help="keep inputs/outputs here (default: a temp folder)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    w, h = (int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        inp, out = root / "in", root / "out"
        inp.mkdir(parents=True, exist_ok=True)
        files = [synth.make_video(inp / f"v{i:03d}.mp4", scenes=(args.seconds / 2, args.seconds / 2), size=(w, h))
                 for i in range(args.videos)]
        decode_s = ffmpeg_decode_seconds(files)
        with FakeCaptionServer() as server:
            cfg = load_data_config(None, [f"input={inp}", f"output={out}", f"engine.workers={args.workers}",
                                          f"caption.base_url={server.base_url}", "filter.min_width=64",
                                          "filter.min_height=64", "pack.target_area_side=256"])
            summary = run_pipeline(cfg)
        clips = summary["stages"]["split"]["accepted"]
        print(f"\n{args.videos} videos of {args.seconds:.0f} s at {w}x{h} 30 fps -> {clips} clips; "
              f"{args.workers} workers; pipeline rates are per item the stage consumes (sources for probe/split)")
        print(f"{'step':<28}{'items':>7}{'seconds':>9}{'items/s':>9}{'clips/s':>9}")
        print(f"{'ffmpeg decode (baseline)':<28}{len(files):>7}{decode_s:>9.2f}{len(files) / decode_s:>9.2f}"
              f"{clips / decode_s:>9.2f}")
        for name, s in summary["stages"].items():
            rate = s["inputs_per_s"] or 0.0
            clip_rate = (s["outputs_per_s"] or 0.0) if name in ("probe", "split") else rate
            if name == "probe":
                clip_rate = rate * clips / max(1, s["inputs"])
            print(f"{name:<28}{s['processed']:>7}{s['seconds']:>9.2f}{rate:>9.2f}{clip_rate:>9.2f}")
        total = sum(s["seconds"] for s in summary["stages"].values())
        print(f"{'pipeline total':<28}{clips:>7}{total:>9.2f}{'':>9}{clips / total:>9.2f}")


if __name__ == "__main__":
    main()
