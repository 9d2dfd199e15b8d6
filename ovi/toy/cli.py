"""``ovi-toy``: make a folder of toy clips (mp4 + ground-truth sidecars), or score a folder of clips.

    ovi-toy make --out DIR --num 100 --seed 0 [--size 64] [--kinds bounce,flash,face,ambient] [--colours cyan]
    ovi-toy score DIR [--shuffle-audio] [--json report.json]
    ovi-toy rebuild [--out runs/toy] [--quick] [--ablations] [--video-basis haar_time]   # the whole recipe

``make`` is resumable: clips whose mp4 and sidecar both exist are skipped. ``score`` measures every mp4 from
its pixels and sound; sidecars, when present, add the ground-truth comparison. ``--shuffle-audio`` pairs
each video with another clip's audio (same kind) to give the chance level of the metric.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from ovi.media import read_audio, read_video
from ovi.toy import rebuild
from ovi.toy.clip import SAMPLE_RATE, SIZES
from ovi.toy.metrics import score_clip, shuffled_pairs, summarise
from ovi.toy.sidecar import read_truth
from ovi.toy.draw import COLOURS, HELD_OUT
from ovi.toy.world import EVENT_KINDS, KINDS, clip_plan, is_complete, make_clip, write_clip


def _comma_list(what: str, allowed: Iterable[str]) -> Callable[[str], list[str]]:
    """argparse type: a comma list of names from ``allowed``."""
    allowed = list(allowed)

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; choose from {','.join(allowed)}")
        return names
    return parse


def make(out: Path, num: int, seed: int, size: int, kinds: list[str], palette: list[str] | None = None
         ) -> tuple[int, int]:
    """Write the planned clips that are not complete yet; returns (made, skipped)."""
    made = skipped = 0
    for clip_id, kind, clip_seed in tqdm(clip_plan(num, seed, kinds), desc="ovi-toy make", unit="clip"):
        if is_complete(out, clip_id):
            skipped += 1
            continue
        write_clip(out, clip_id, make_clip(kind, clip_seed, size, palette))
        made += 1
    return made, skipped


def _fmt(v: float, spec: str = ".2f") -> str:
    return "-" if isinstance(v, float) and math.isnan(v) else format(v, spec)


def score(folder: Path, shuffle_audio: bool = False) -> tuple[list[dict], dict]:
    """Per-clip rows and the folder summary (see ``ovi.toy.metrics``)."""
    videos = sorted(folder.glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no .mp4 files in {folder}; make some with: ovi-toy make --out {folder} --num 20")
    truths = [read_truth(v) for v in videos]  # None for ovi-generate's own records
    partner = list(range(len(videos)))
    if shuffle_audio:
        partner = shuffled_pairs([t["kind"] if t else "?" for t in truths])
    rows, scores = [], []
    for i, video in enumerate(tqdm(videos, desc="ovi-toy score", unit="clip")):
        frames, fps = read_video(video)
        audio = read_audio(videos[partner[i]], SAMPLE_RATE)
        s = score_clip(frames, audio, fps, SAMPLE_RATE, truths[i])
        scores.append(s)
        rows.append({"id": video.stem, "audio_from": videos[partner[i]].stem, **s.as_dict()})
    return rows, summarise(scores)


def print_table(rows: list[dict], summary: dict) -> None:
    header = f"{'clip':<24} {'kind':<16} {'n':>2} {'colours':<22} {'vis':>3} {'ons':>3} {'share':>5} " \
             f"{'off_ms':>6} {'mouth_r':>7}"
    print(header)
    for r in rows:
        true_kind = r["truth"].get("kind")
        kind = r["kind"] if true_kind in (None, r["kind"]) else f"{r['kind']}(!{true_kind})"
        print(f"{r['id'][:24]:<24} {kind:<16} {r['count']:>2} {','.join(r['colours'])[:22]:<22} "
              f"{len(r['visual_events_s']):>3} {len(r['onsets_s']):>3} {_fmt(r['share_matched']):>5} "
              f"{_fmt(r['median_offset_ms'], '.1f'):>6} {_fmt(r['mouth_corr'], '.3f'):>7}")
    print("summary: " + ", ".join(f"{k}={_fmt(v, '.3f') if isinstance(v, float) else v}" for k, v in summary.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ovi-toy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make", help="write toy clips (mp4 + json ground truth); resumable")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--num", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=SIZES[0], choices=SIZES)
    p.add_argument("--kinds", type=_comma_list("kinds", KINDS), default=list(KINDS),
                   help=f"comma list of {','.join(KINDS)}")
    p.add_argument("--colours", type=_comma_list("colours", COLOURS),
                   help="object colours of bounce/flash scenes (default: the palette; "
                        f"'{','.join(HELD_OUT)}' is held out of the default world for fine-tuning)")
    p = sub.add_parser("score", help="sync and adherence metrics of a folder of mp4s")
    p.add_argument("folder", type=Path)
    p.add_argument("--shuffle-audio", action="store_true", help="pair each video with another clip's audio")
    p.add_argument("--json", type=Path, help="also write the rows and summary here")
    p = sub.add_parser("rebuild", help="world -> shards -> codecs -> stage 1 -> stage 2 -> release folder; resumable")
    rebuild.add_arguments(p)
    args = parser.parse_args(argv)
    if args.command == "rebuild":
        return rebuild.run_from_args(args)
    if args.command == "make":
        if args.colours and set(args.kinds) - set(EVENT_KINDS):
            parser.error(f"--colours applies to {','.join(EVENT_KINDS)} scenes; add --kinds bounce (or flash)")
        made, skipped = make(args.out, args.num, args.seed, args.size, args.kinds, args.colours)
        print(f"made {made} clips, skipped {skipped} already complete, in {args.out}")
        return 0
    rows, summary = score(args.folder, args.shuffle_audio)
    print_table(rows, summary)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
