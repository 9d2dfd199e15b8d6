"""ovi-generate: prompts in, mp4 files with sound out.

    ovi-generate --config configs/inference/960x960_10s.yaml --prompt "A cat ... Audio: purring"
    ovi-generate --config configs/inference/960x960_10s.yaml --prompts-file prompts.tsv num_samples=2
    ovi-generate --config configs/inference/tiny_cpu.yaml          # tiny random weights, CPU, seconds

Any InferenceConfig field (ovi/config.py) can be overridden as key=value. Every prompt and image is
checked, and every release file looked for, before a model is loaded.
"""
from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ovi.config import InferenceConfig, load_config
from ovi.prompts import PromptError, validate_prompt

logger = logging.getLogger("ovi.generate")
_SLUG_CHARS = 40


@dataclass
class Job:
    prompt: str
    image: str | None


def read_jobs(cfg: InferenceConfig) -> list[Job]:
    """The prompt (+ image) of the config, or the rows of ``prompts_file`` (CSV or TSV, header required)."""
    if bool(cfg.prompt) == bool(cfg.prompts_file):
        raise ValueError("give exactly one of --prompt TEXT or --prompts-file PATH (CSV/TSV with a `prompt` column)")
    if cfg.prompt:
        return [Job(cfg.prompt, cfg.image or None)]
    path = Path(cfg.prompts_file)
    if not path.is_file():
        raise FileNotFoundError(f"prompts_file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        dialect = "excel-tab" if path.suffix.lower() in (".tsv", ".tab") else "excel"
        rows = list(csv.DictReader(fh, dialect=dialect))
    if not rows or "prompt" not in rows[0]:
        raise ValueError(f"{path}: needs a header row with a `prompt` column (and optionally `image`)")
    base = path.parent
    jobs = []
    for row in rows:
        image = (row.get("image") or "").strip()
        jobs.append(Job(row["prompt"], str(image if Path(image).is_absolute() else base / image) if image else None))
    return jobs


def check_jobs(jobs: list[Job]) -> None:
    """Fail before any model loads: malformed prompts and missing images, all reported at once."""
    problems = []
    for i, job in enumerate(jobs):
        try:
            validate_prompt(job.prompt)
        except PromptError as e:
            problems.append(f"prompt {i + 1}: {e}")
        if job.image and not Path(job.image).is_file():
            problems.append(f"prompt {i + 1}: image not found: {job.image}")
    if problems:
        raise ValueError("\n".join(problems))


def output_name(index: int, prompt: str, seed: int) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", prompt)[:_SLUG_CHARS].strip("_") or "sample"
    return f"{index:03d}_{slug}_seed{seed}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ovi-generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/inference/960x960_10s.yaml", help="inference YAML")
    # Free text goes through flags: a key=value override is parsed as YAML, and "Audio: x" is a mapping there.
    ap.add_argument("--prompt", help="the prompt (overrides the config's prompt)")
    ap.add_argument("--image", help="first frame for image-to-video")
    ap.add_argument("--prompts-file", help="CSV/TSV with a `prompt` column and an optional `image` column")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of InferenceConfig fields")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = load_config(InferenceConfig, args.config, args.overrides)
        if args.prompts_file:
            cfg.prompts_file, cfg.prompt = args.prompts_file, ""
        if args.prompt is not None:
            cfg.prompt = args.prompt
        if args.image is not None:
            cfg.image = args.image
        jobs = read_jobs(cfg)
        check_jobs(jobs)
        from ovi.pipeline import OviPipeline  # heavy imports only once the inputs are known to be good
        from ovi.media import write_mp4

        pipe = OviPipeline.from_config(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"ovi-generate: {e}", file=sys.stderr)
        return 2
    out_dir = Path(cfg.output_dir)
    for i, job in enumerate(jobs):
        for k in range(cfg.num_samples):
            seed = cfg.seed + k
            result = pipe.generate(job.prompt, image=job.image, seed=seed)
            stem = out_dir / output_name(i, job.prompt, seed)
            path = write_mp4(stem.with_suffix(".mp4"), result.video, result.audio, fps=result.fps,
                             sample_rate=result.sample_rate,
                             wav_path=stem.with_suffix(".wav") if cfg.save_wav else None)
            logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
