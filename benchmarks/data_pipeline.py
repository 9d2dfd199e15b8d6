"""Data pipeline throughput: clips/s and core-seconds per clip per stage, next to ffmpeg alone decoding the
same files, plus how many times each clip is encoded and decoded.

    python benchmarks/data_pipeline.py [--videos 2] [--seconds 11] [--size 1280x720] [--workers 1]

Generates the videos (two scenes each, 30 fps, tone audio), times ``ffmpeg -i f -f null -`` over them (the
floor any pipeline pays to read its input), then runs the pipeline (local engine; captions from the loopback
test server, so the caption figure is our overhead, not a model's; SyncNet / aesthetic / face are switched
off: no weights here) and prints each stage's core-seconds from the per-input results (``cpu_seconds``: the
worker's and its ffmpeg runs' CPU time), which hold for any engine and worker count and do not grow when
other work shares the machine (wall-clock figures here do). Encodes and decodes are counted
at the one place ffmpeg is started (``data_pipeline.media``).
"""
from __future__ import annotations

import argparse
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_pipeline import media, synth  # noqa: E402
from data_pipeline.config import load_data_config  # noqa: E402
from data_pipeline.fake_caption_server import FakeCaptionServer  # noqa: E402
from data_pipeline.runner import run_pipeline  # noqa: E402
from ovi.geometry import FIVE_SECOND  # noqa: E402
from ovi.logs import setup_logging  # noqa: E402


class FfmpegCounter:
    """Stands in for ``subprocess`` inside data_pipeline.media and counts ffmpeg runs by kind."""

    def __init__(self) -> None:
        self.encodes = 0  # runs writing h264
        self.decodes = 0  # runs decoding video to frames (pipes) or cutting clips

    def _count(self, cmd) -> None:
        if not cmd or not str(cmd[0]).endswith("ffmpeg"):
            return
        self.encodes += sum(1 for a in cmd if a == "libx264")
        self.decodes += 1 if any(a in ("image2pipe", "rawvideo", "null") for a in cmd) or "libx264" in cmd else 0

    def run(self, cmd, *args, **kwargs):
        self._count(cmd)
        return subprocess.run(cmd, *args, **kwargs)

    def Popen(self, cmd, *args, **kwargs):  # noqa: N802 (subprocess's name)
        self._count(cmd)
        return subprocess.Popen(cmd, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(subprocess, name)


def ffmpeg_decode_seconds(files: list[Path]) -> float:
    """CPU seconds ffmpeg spends decoding ``files`` to nothing (as the stages' figures, CPU not wall)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for f in files:
        media.run_ffmpeg(["-threads", "1", "-i", str(f), "-f", "null", "-"])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def run_once(inp: Path, out: Path, w: int, h: int, workers: int, extra: list[str]) -> tuple[dict, float, FfmpegCounter]:
    counter = FfmpegCounter()
    media.subprocess = counter  # type: ignore[assignment]
    try:
        with FakeCaptionServer() as server:
            cfg = load_data_config(None, [f"input={inp}", f"output={out}", f"engine.workers={workers}",
                                          f"caption.base_url={server.base_url}", f"filter.min_width={min(w, h)}",
                                          f"filter.min_height={min(w, h)}", "sync.enabled=false",
                                          "filter.aesthetic.enabled=false", "filter.face.enabled=false", *extra])
            start = time.perf_counter()
            summary = run_pipeline(cfg)
            return summary, time.perf_counter() - start, counter
    finally:
        media.subprocess = subprocess  # type: ignore[assignment]


def report(title: str, summary: dict, wall: float, counter: FfmpegCounter, decode_s: float, files: int) -> None:
    clips = summary["stages"]["pack"]["samples"]
    if not clips:
        raise SystemExit(f"{title}: no clip came through the pipeline, so there is nothing to time per clip")
    print(f"\n{title}: {clips} clips")
    print(f"{'step':<26}{'inputs':>7}{'core-s':>9}{'core-s/clip':>13}{'clips/s/core':>14}{'x decode':>10}")
    base = decode_s / clips
    print(f"{'ffmpeg decode (baseline)':<26}{files:>7}{decode_s:>9.2f}{base:>13.3f}{clips / decode_s:>14.2f}"
          f"{1.0:>10.1f}")
    total = 0.0
    for name, s in summary["stages"].items():
        total += s["core_seconds"]
        rate = f"{clips / s['core_seconds']:.2f}" if s["core_seconds"] > 0 else "-"
        print(f"{name:<26}{s['inputs']:>7}{s['core_seconds']:>9.2f}{s['core_seconds'] / clips:>13.3f}{rate:>14}"
              f"{s['core_seconds'] / clips / base:>10.1f}")
    print(f"{'all stages':<26}{'':>7}{total:>9.2f}{total / clips:>13.3f}{clips / total:>14.2f}"
          f"{total / clips / base:>10.1f}")
    print(f"end to end: {wall:.2f} s wall, {clips / wall:.3f} clips/s; per clip: {counter.encodes / clips:.1f} "
          f"h264 encodes, {counter.decodes / clips:.1f} ffmpeg decode runs")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=2)
    p.add_argument("--seconds", type=float, default=11.0, help="length of each video (two equal scenes)")
    p.add_argument("--size", default="1280x720")
    p.add_argument("--workers", type=int, default=1,
                   help="1 runs the chain in-process (no worker start-up in the figures); more use a process pool")
    p.add_argument("--compare", action="store_true",
                   help="also run with split.final_size=false (the source-size intermediate re-encoded in pack, "
                        "as before encode-once) in the same process, for a before/after on equal footing")
    p.add_argument("--workdir", type=Path, help="keep inputs/outputs here (default: a temp folder)")
    args = p.parse_args()
    if args.seconds / 2 < FIVE_SECOND.duration_s:  # each scene must hold one training clip, or nothing is packed
        p.error(f"--seconds {args.seconds:g} makes scenes shorter than a {FIVE_SECOND.duration_s:.2f} s clip; "
                f"give at least {2 * FIVE_SECOND.duration_s:.2f} (default 11)")
    setup_logging(logging.WARNING, logging.BASIC_FORMAT)  # basicConfig's own format, as before
    w, h = (int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        inp = root / "in"
        inp.mkdir(parents=True, exist_ok=True)
        files = [synth.make_video(inp / f"v{i:03d}.mp4", scenes=(args.seconds / 2, args.seconds / 2), size=(w, h))
                 for i in range(args.videos)]
        print(f"{args.videos} videos of {args.seconds:.0f} s at {w}x{h} 30 fps; {args.workers} workers")
        variants = [("encode once (split.final_size=true)", [])]
        if args.compare:
            variants.insert(0, ("before: source-size intermediate (split.final_size=false)",
                                ["split.final_size=false"]))
        for i, (title, extra) in enumerate(variants):
            decode_s = ffmpeg_decode_seconds(files)  # measured next to each variant: the machine may be shared
            summary, wall, counter = run_once(inp, root / f"out{i}", w, h, args.workers, extra)
            report(title, summary, wall, counter, decode_s, len(files))


if __name__ == "__main__":
    main()
