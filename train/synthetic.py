"""Small synthetic datasets in the data pipeline's shard format, made with real tools (ffmpeg, sox,
espeak-ng): for the trainer's tests, the benchmark and smoke-testing a cluster set-up before real data.

    {out}/shards/{prefix}-{NNNNNN}.tar + index.json
    audio-video sample: <key>.mp4 (h264, `fps`, `num_frames` frames), <key>.wav (16 kHz mono PCM16), <key>.json
    audio-only sample:  <key>.wav, <key>.json (with "duration_s")

    python -m train.synthetic --out data/synthetic_av --clips 16 --width 64 --height 64 --num-frames 9
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.shards import Sample, plan_shards, write_index, write_shard
from ovi.geometry import FPS, SAMPLE_RATE

WORDS = "red green blue quiet loud river bell drum wind rain bird voice piano engine crowd".split()


@dataclass
class Clip:
    key: str
    files: dict[str, bytes]


def _run(cmd: list[str]) -> None:
    if shutil.which(cmd[0]) is None:
        raise RuntimeError(f"`{cmd[0]}` not found; install it (Debian: apt-get install ffmpeg sox espeak-ng)")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_audio(path: Path, seconds: float, rng: random.Random, speech: bool) -> None:
    """16 kHz mono PCM16 wav: espeak-ng speech, or a sox tone mix, padded/trimmed to ``seconds``. Byte-identical
    across runs: sox's default dither is random, so it is off (-D)."""
    if speech:
        raw = path.with_suffix(".speech.wav")
        text = " ".join(rng.choice(WORDS) for _ in range(6))
        _run(["espeak-ng", "-s", "160", "-w", str(raw), text])
        _run(["sox", "-D", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path),
              "pad", "0", str(seconds), "trim", "0", str(seconds)])
        raw.unlink()
    else:
        f1, f2 = rng.randint(150, 900), rng.randint(900, 3000)
        _run(["sox", "-D", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path), "synth", str(seconds),
              "sine", f"{f1}-{f2}", "sine", str(f1 * 2), "remix", "-", "vol", "0.5"])


def make_video(path: Path, width: int, height: int, num_frames: int, rng: random.Random) -> None:
    """h264 mp4 of exactly ``num_frames`` frames at 24 fps (a moving test pattern, hue by seed)."""
    hue = rng.randint(0, 359)
    src = f"testsrc2=size={width}x{height}:rate={FPS},hue=h={hue}"
    _run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src, "-frames:v", str(num_frames),
          "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast", str(path)])


def _caption(rng: random.Random, speech: bool) -> str:
    scene = " ".join(rng.choice(WORDS) for _ in range(4))
    said = " ".join(rng.choice(WORDS) for _ in range(3))
    return f"A {scene} scene. <S>{said}<E> Audio: {'a voice speaks' if speech else 'a tone sweeps'}"


def make_clip(tmp: Path, index: int, rng: random.Random, *, video: bool, width: int, height: int,
              num_frames: int, seconds: float) -> Clip:
    key = f"clip_{index:06d}"  # no dots: webdataset keys end at the first dot
    speech = index % 2 == 0
    wav = tmp / f"{key}.wav"
    make_audio(wav, seconds, rng, speech)
    num_samples = round(seconds * SAMPLE_RATE)
    meta = {"caption": _caption(rng, speech), "sample_rate": SAMPLE_RATE, "num_samples": num_samples,
            "source": "synthetic", "start_s": 0.0, "end_s": seconds, "scores": {}}
    files = {"wav": wav.read_bytes()}
    if video:
        mp4 = tmp / f"{key}.mp4"
        make_video(mp4, width, height, num_frames, rng)
        files["mp4"] = mp4.read_bytes()
        meta.update(num_frames=num_frames, fps=FPS, width=width, height=height)
    else:
        meta["duration_s"] = seconds
    files["json"] = json.dumps(meta).encode()
    return Clip(key, files)


def write_shards(out: Path, clips: list[Clip], per_shard: int, prefix: str, kind: str) -> None:
    """Pack with the data pipeline's own shard writer, so these datasets are that format by construction."""
    root = out / "shards"
    samples = [Sample(c.key, {e: d for e, d in c.files.items() if e != "json"}, json.loads(c.files["json"]))
               for c in clips]
    entries = [{"name": plan.name, "num_samples": len(plan.samples), "num_bytes": write_shard(root / plan.name, plan)}
               for plan in plan_shards(samples, prefix, per_shard, max_bytes=sys.maxsize)]
    write_index(root, entries, kind)


def write_dataset(out: Path, clips: int, per_shard: int, *, video: bool, width: int = 64, height: int = 64,
                  num_frames: int = 9, seconds: float | list[float] = 5.04, seed: int = 0) -> Path:
    """Write ``clips`` samples; ``seconds`` may give one duration per clip (variable-length audio)."""
    rng = random.Random(seed)
    durations = seconds if isinstance(seconds, list) else [seconds] * clips
    with tempfile.TemporaryDirectory() as tmp:
        made = [make_clip(Path(tmp), i, rng, video=video, width=width, height=height, num_frames=num_frames,
                          seconds=durations[i]) for i in range(clips)]
    write_shards(out, made, per_shard, "av" if video else "audio", "audio_video" if video else "audio")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--per-shard", type=int, default=4)
    p.add_argument("--audio-only", action="store_true")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--num-frames", type=int, default=9)
    p.add_argument("--seconds", type=float, default=5.04)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    write_dataset(a.out, a.clips, a.per_shard, video=not a.audio_only, width=a.width, height=a.height,
                  num_frames=a.num_frames, seconds=a.seconds, seed=a.seed)
    print(f"wrote {a.clips} clips to {a.out}/shards")


if __name__ == "__main__":
    main()
