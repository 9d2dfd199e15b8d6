"""``ovi-eval``: score a folder of generated clips.

    ovi-eval OUTPUT_DIR [--metrics toy,syncnet,panns,clap,audiobox,wer,clip,fvd] [--weights NAME=PATH ...]
             [--prompts-file FILE] [--references DIR] [--out DIR] [--device cpu]
    ovi-eval attention CLIP.mp4 [--config PRESET] ...   (cross-modal attention maps: ovi.eval.clip_attention)

Writes ``metrics.json`` (per clip + aggregate), ``metrics.md`` and ``plots/*.png`` to ``--out``
(default ``OUTPUT_DIR/eval``) and prints the table. Weight names: see ``ovi.eval.weights.WEIGHTS``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovi.eval.registry import BUILDERS, DEFAULT_METRICS
from ovi.eval.report import markdown, write
from ovi.eval.run import evaluate
from ovi.eval.weights import WEIGHTS


def _pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in WEIGHTS:
            raise SystemExit(f"--weights takes NAME=PATH with NAME one of {', '.join(WEIGHTS)}; got {item!r}")
        out[name] = path
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["attention"]:
        from ovi.eval.clip_attention import main as attention_main

        return attention_main(argv[1:])
    p = argparse.ArgumentParser(prog="ovi-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help=f"comma list of {','.join(BUILDERS)}")
    p.add_argument("--weights", nargs="*", default=[], metavar="NAME=PATH")
    p.add_argument("--prompts-file", type=Path)
    p.add_argument("--references", type=Path, help="folder of reference mp4s named like the generated ones")
    p.add_argument("--out", type=Path)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    try:
        report = evaluate(args.folder, metrics, _pairs(args.weights), args.prompts_file, args.references,
                          args.device)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    paths = write(report, args.out or args.folder / "eval")
    print(markdown(report), end="")
    print(f"wrote {paths['json']}, {paths['markdown']} and {paths['plots']}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
