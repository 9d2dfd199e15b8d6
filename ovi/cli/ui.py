"""ovi-ui: the web UI (Gradio) on a preset.

    ovi-ui                                   # the shipped toy model: runs on any CPU
    ovi-ui --config 960x960_10s --port 7891  # the released model (after ovi-download)
"""
from __future__ import annotations

import argparse
import sys

from ovi.logs import setup_logging
from ovi.presets import load_inference_config
from ovi.ui.app import DEFAULT_UI_PRESET, build_app
from ovi.validation import InvalidRequest, check_request


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ovi-ui", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEFAULT_UI_PRESET, help=f"preset name or YAML path (default {DEFAULT_UI_PRESET})")
    ap.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve the LAN")
    ap.add_argument("--port", type=int, default=7891)
    ap.add_argument("--share", action="store_true", help="a public Gradio link")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of InferenceConfig fields")
    args = ap.parse_intermixed_args(argv)
    setup_logging()
    try:
        cfg = load_inference_config(args.config, args.overrides)
        check_request(cfg, [])  # settings, release files, device: before the first click, not after it
    except InvalidRequest as e:
        print("\n".join(f"ovi-ui: {p}" for p in e.problems), file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"ovi-ui: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    build_app(cfg).launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
