"""ovi-generate: prompts in, mp4 files with sound out.

    ovi-generate --config 960x960_10s --prompt "A cat ... Audio: purring"
    ovi-generate --config 960x960_10s --prompts-file prompts.csv num_samples=2 --skip-existing
    ovi-generate --config tiny_cpu                         # tiny random weights, CPU, seconds
    ovi-generate --config tiny_cpu --check                 # validate only
    ovi-generate --config 960x960_5s --video clip.mp4 --prompt "... Audio: rain"   # V2A: the clip with new sound
    ovi-generate --config 960x960_5s --audio speech.wav --prompt "A man talks ..."  # A2V: video for the sound
    ovi-generate --config 960x960_5s --extend clip.mp4 --prompt "..."               # continue the clip's end
    ovi-generate --list-presets | --print-config

--config takes a preset name (--list-presets) or a YAML path, from any working directory. Any
InferenceConfig field (ovi/config.py) can be overridden as key=value. Everything (settings, prompts, images,
release files, the output folder) is checked before a model loads; each problem is one line, exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace

from ovi.config import to_yaml
from ovi.logs import setup_logging
from ovi.presets import DEFAULT_PRESET, list_presets, load_inference_config
from ovi.prompt_files import Job, PromptsFileError, read_prompts_file
from ovi.validation import InvalidRequest, check_request, resolve_seed

logger = logging.getLogger("ovi.generate")
EXIT_INVALID = 2


def read_jobs(cfg) -> list[Job]:
    """The prompt (+ image) of the config, or the rows of ``prompts_file``."""
    if bool(cfg.prompt) == bool(cfg.prompts_file):
        raise InvalidRequest(["give exactly one of --prompt TEXT or --prompts-file PATH (CSV/TSV with a `prompt` column)"])
    if cfg.prompt:
        return [Job(cfg.prompt, cfg.image or None)]
    return read_prompts_file(cfg.prompts_file)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ovi-generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEFAULT_PRESET, help=f"preset name or YAML path (default {DEFAULT_PRESET})")
    # Free text goes through flags: a key=value override is parsed as YAML, and "Audio: x" is a mapping there.
    ap.add_argument("--prompt", help="the prompt (overrides the config's prompt)")
    ap.add_argument("--image", help="first frame for image-to-video")
    # Given media (ovi/modes.py); one mode at a time. What is given is written back unchanged.
    ap.add_argument("--video", help="V2A: keep this video, generate its audio")
    ap.add_argument("--audio", help="A2V: keep this audio (wav, mp3, or a video's sound track), generate the video")
    ap.add_argument("--extend", help="continue this clip: its last extend_frames latent frames (and audio) lead the "
                                     "new clip")
    ap.add_argument("--prompts-file", help="CSV/TSV: `prompt` or `text_prompt`, optional `image` or `image_path`")
    ap.add_argument("--check", action="store_true", help="validate everything, load nothing, write nothing")
    ap.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: new names)")
    ap.add_argument("--skip-existing", action="store_true", help="skip samples whose mp4 exists (batch resume)")
    ap.add_argument("--list-presets", action="store_true", help="print the packaged presets and exit")
    ap.add_argument("--print-config", action="store_true", help="print the merged config as YAML and exit")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of InferenceConfig fields")
    return ap


def _config(args: argparse.Namespace):
    cfg = load_inference_config(args.config, args.overrides)
    if args.prompts_file:
        cfg = replace(cfg, prompts_file=args.prompts_file, prompt="")
    if args.prompt is not None:
        cfg = replace(cfg, prompt=args.prompt)
    for name in ("image", "video", "audio", "extend"):
        if getattr(args, name) is not None:
            cfg = replace(cfg, **{name: getattr(args, name)})
    return replace(cfg, overwrite=cfg.overwrite or args.overwrite, skip_existing=cfg.skip_existing or args.skip_existing)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_intermixed_args(argv)  # key=value overrides may come before or after flags
    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    setup_logging()
    try:
        cfg = _config(args)
        if args.print_config:
            print(to_yaml(cfg), end="")
            return 0
        jobs = read_jobs(cfg)
        for warning in check_request(cfg, jobs):
            logger.warning(warning)
    except (InvalidRequest, PromptsFileError) as e:
        for problem in e.problems:
            print(f"ovi-generate: {problem}", file=sys.stderr)
        return EXIT_INVALID
    except (ValueError, FileNotFoundError) as e:  # config files and overrides (load_config names the key)
        print(f"ovi-generate: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_INVALID
    if args.check:
        print(f"ovi-generate: ok: {len(jobs)} prompt(s) x {cfg.num_samples} sample(s) would be written to {cfg.output_dir}")
        return 0
    return run(cfg, jobs)


def run(cfg, jobs: list[Job]) -> int:
    """Load once, then every (prompt, seed), with progress over the whole batch."""
    from ovi.outputs import claim_stem, exists, output_stem, save_generation
    from ovi.parallel.groups import agree, init_from_env, leave_process_group, my_share
    from ovi.pipeline import OviPipeline  # heavy imports only once the inputs are known to be good

    base_seed = resolve_seed(cfg.seed)  # -1: one random base for the batch, logged
    work = [(i, job, base_seed + k) for i, job in enumerate(jobs) for k in range(cfg.num_samples)]
    todo = [(i, job, seed) for i, job, seed in work
            if not (cfg.skip_existing and exists(cfg.output_dir, output_stem(i, job.prompt, seed)))]
    if len(todo) < len(work):
        logger.info("skip_existing: %d of %d samples already written", len(work) - len(todo), len(work))
    if not todo:
        return 0
    # Under torchrun: one process group; SP groups of sp_size ranks each take every dp_size-th sample.
    local_rank = init_from_env(cfg.device.split(":")[0])
    todo = agree(todo)
    start = time.monotonic()
    logger.info("loading models ...")
    pipe = OviPipeline.from_config(cfg)
    logger.info("models loaded in %.1f s", time.monotonic() - start)
    if pipe.layout.world_size > 1:
        todo = my_share(todo, pipe.layout)
        logger.info("rank %d (local %d): SP group %d of %d, %d sample(s)", pipe.layout.rank, local_rank,
                    pipe.layout.dp_rank, pipe.layout.dp_size, len(todo))
    for n, (i, job, seed) in enumerate(todo, 1):
        t0 = time.monotonic()
        logger.info("[%d/%d] %s, seed %d", n, len(todo), job.where, seed)
        result = pipe.generate(job.prompt, image=job.image, seed=seed, video=cfg.video or None,
                               audio=cfg.audio or None, extend=cfg.extend or None)
        if result is None:  # an SP follower: its group's leader writes the output
            continue
        stem = claim_stem(cfg.output_dir, output_stem(i, job.prompt, seed), cfg.overwrite)
        path = save_generation(result, stem, cfg, job.image)
        logger.info("[%d/%d] wrote %s (%.1f s)", n, len(todo), path, time.monotonic() - t0)
    leave_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
