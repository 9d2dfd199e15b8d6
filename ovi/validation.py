"""Every generation request checked before any model loads: the one place, one line per problem.

    check_request(cfg, jobs)  -> warnings; raises InvalidRequest(problems) listing every problem at once
    settings_problems(cfg)    the per-call part (choices, ranges, sizes, seed), also run by OviPipeline.generate

Each problem is one line that names the setting (or file and line) and the fix. Nothing here builds a model:
it reads YAML, file headers, the tokenizer and the images, and probes the output folder.
"""
from __future__ import annotations

import logging
import numbers
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ovi.config import InferenceConfig, load_fusion_config
from ovi.geometry import VAE_TEMPORAL_FACTOR, ClipGeometry
from ovi.prompt_files import Job
from ovi.prompts import CHECKPOINT_PROMPT_STYLE, PromptError, format_prompt, style_for_checkpoint, validate_prompt
from ovi.sampling import SOLVERS

logger = logging.getLogger(__name__)

# Clip length and pixel area each released fusion file was trained at (the reference's model specs).
RELEASED_NUM_FRAMES = {"720x720_5s": 121, "960x960_5s": 121, "960x960_10s": 241}
RELEASED_AREA = {"720x720_5s": 720 * 720, "960x960_5s": 960 * 960, "960x960_10s": 960 * 960}
AREA_TOLERANCE = 0.1  # the reference warns when a request is more than 10% off the model's area
LONG_PROMPT_POLICIES = ("warn", "error")
DTYPE_NAMES = ("bfloat16", "float32")  # ovi.pipeline.DTYPES keys (a test checks they agree)
SEED_LIMIT = 2**63  # torch generators take 64-bit seeds; seeds seed..seed+n-1 must all fit
RANDOM_SEED = -1


class InvalidRequest(ValueError):
    """One or more problems with a request; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ModelFacts:
    num_layers: int  # SLG can skip blocks 1..num_layers-1
    text_len: int  # prompt tokens the model sees


def resolve_seed(seed: object) -> int:
    """An integer seed; -1 draws a random one (logged, so the sample can be remade)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InvalidRequest([f"seed must be an integer (or -1 for a random one), got {seed!r}"])
    if seed == RANDOM_SEED:
        seed = secrets.randbelow(2**31)
        logger.info("seed=-1: using random seed %d", seed)
    return int(seed)


def settings_problems(cfg: InferenceConfig, facts: ModelFacts | None = None) -> list[str]:
    """Choices and ranges of the sampling and size settings (cheap: no files)."""
    from ovi.models.attention import BACKENDS  # the attention module owns the backend names
    from ovi.models.quant import QUANTIZE_MODES

    p = []
    frames_ok = cfg.num_frames >= 1 and (cfg.num_frames - 1) % VAE_TEMPORAL_FACTOR == 0
    if cfg.solver not in SOLVERS:
        p.append(f"solver={cfg.solver!r} is unknown; choose one of {', '.join(SOLVERS)}")
    if cfg.attention_backend not in BACKENDS:
        p.append(f"attention_backend={cfg.attention_backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
    if cfg.variant not in CHECKPOINT_PROMPT_STYLE:
        p.append(f"variant={cfg.variant!r} is unknown; choose one of {', '.join(CHECKPOINT_PROMPT_STYLE)}")
    if cfg.dtype not in DTYPE_NAMES:
        p.append(f"dtype={cfg.dtype!r} is unknown; choose one of {', '.join(DTYPE_NAMES)}")
    if cfg.quantize not in QUANTIZE_MODES:
        p.append(f"quantize={cfg.quantize!r} is unknown; choose one of {', '.join(QUANTIZE_MODES)}")
    for name in ("offload_blocks", "vae_chunk_frames", "step_cache"):
        if getattr(cfg, name) < 0:
            p.append(f"{name}={getattr(cfg, name)} must be >= 0 (0 turns it off)")
    if cfg.long_prompts not in LONG_PROMPT_POLICIES:
        p.append(f"long_prompts={cfg.long_prompts!r} is unknown; choose one of {', '.join(LONG_PROMPT_POLICIES)}")
    if cfg.num_steps < 1:
        p.append(f"num_steps={cfg.num_steps} must be >= 1 (the release uses 50)")
    if not cfg.shift > 0:
        p.append(f"shift={cfg.shift} must be > 0 (the release uses 5.0)")
    for name in ("video_guidance_scale", "audio_guidance_scale"):
        if getattr(cfg, name) < 0:
            p.append(f"{name}={getattr(cfg, name)} must be >= 0 (1 = no guidance)")
    if cfg.sync_guidance_scale < 0:
        p.append(f"sync_guidance_scale={cfg.sync_guidance_scale} must be >= 0 (0 turns it off)")
    if cfg.sync_guidance_scale > 0 and frames_ok and not 0 < cfg.sync_guidance_shift_s < cfg.geometry.duration_s:
        p.append(f"sync_guidance_shift_s={cfg.sync_guidance_shift_s} must be between 0 and the clip's "
                 f"{cfg.geometry.duration_s:.2f} s (1.0 moves the partner one second)")
    if facts is not None and not -1 <= cfg.slg_layer < facts.num_layers:
        p.append(f"slg_layer={cfg.slg_layer} out of range; use 1..{facts.num_layers - 1}, or 0 / -1 to turn it off")
    if cfg.area <= 0:
        p.append(f"area={cfg.area} must be > 0 (pixels per frame, e.g. 921600 = 960*960)")
    if len(cfg.aspect_ratio) != 2 or min(cfg.aspect_ratio, default=0) <= 0:
        p.append(f"aspect_ratio={list(cfg.aspect_ratio)} must be two positive numbers [width, height], e.g. [16, 9]")
    if (cfg.height > 0) != (cfg.width > 0) or min(cfg.height, cfg.width) < 0:
        p.append(f"height={cfg.height} width={cfg.width}: give both as positive numbers (or both 0 to use aspect_ratio)")
    if not frames_ok:
        p.append(f"num_frames={cfg.num_frames} must be 4k+1 (the video VAE's 4x time stride) so audio and video "
                 f"lengths agree; e.g. 121 (5 s) or 241 (10 s)")
    if cfg.num_samples < 1:
        p.append(f"num_samples={cfg.num_samples} must be >= 1")
    if cfg.seed != RANDOM_SEED and not 0 <= cfg.seed < SEED_LIMIT - max(cfg.num_samples, 1):
        p.append(f"seed={cfg.seed} out of range; use 0..2**63-1, or -1 for a random seed")
    if cfg.t2i_model and (cfg.t2i_area <= 0 or cfg.t2i_steps < 1):
        p.append(f"t2i_area={cfg.t2i_area} and t2i_steps={cfg.t2i_steps} must be >= 1")
    p += _finetuning_problems(cfg)
    return p


def pass_weights_conflict(cfg: InferenceConfig) -> str | None:
    """V2A weights (ovi.pass_weights) swap parameter storage; quantisation and block streaming replace or move
    that storage, so they do not go together."""
    if cfg.v2a_weights_used and (cfg.quantize != "none" or cfg.offload_blocks):
        return (f"checkpoints.v2a (V2A weights) cannot be combined with quantize={cfg.quantize} / "
                f"offload_blocks={cfg.offload_blocks}; set quantize=none offload_blocks=0, or checkpoints.v2a= to "
                "make the sound with the fusion file's weights")
    return None


def _finetuning_problems(cfg: InferenceConfig) -> list[str]:
    """LoRA adapter files and the given-media conditioning (issue 11)."""
    from pathlib import Path

    from ovi.lora import parse_adapter_arg
    from ovi.modes import CONDITIONINGS

    p = []
    if cfg.conditioning not in CONDITIONINGS:
        p.append(f"conditioning={cfg.conditioning!r} is unknown; choose one of {', '.join(CONDITIONINGS)}")
    for item in filter(None, cfg.lora.split(",")):
        path, _ = parse_adapter_arg(item.strip())
        if not Path(path).is_file():
            p.append(f"lora: adapter file {path} not found (give PATH[:SCALE], several comma-separated)")
    if cfg.num_frames >= 1 and not 0 <= cfg.extend_frames < cfg.geometry.latent_frames:
        p.append(f"extend_frames={cfg.extend_frames} must be 0 (auto) or 1..{cfg.geometry.latent_frames - 1}: "
                 f"the clean prefix must leave latent frames of the {cfg.geometry.latent_frames} to generate")
    conflict = pass_weights_conflict(cfg)
    p += [conflict] if conflict else []
    return p


def given_media_problems(given: dict, geometry: ClipGeometry, extend_frames: int = 0, image: object = None,
                         where: str = "") -> list[str]:
    """V2A / A2V / extension inputs (``ovi.modes.given_inputs``): one mode at a time, and every file a readable
    medium with the stream its mode needs, long enough for the clip. Reads container headers only."""
    from ovi.modes import extend_latent_frames, required_seconds

    conflict = mode_conflict(list(given), image)
    if conflict:
        return [where + conflict]
    if "extend" in given and extend_latent_frames(geometry, extend_frames) >= geometry.latent_frames:
        return [f"{where}--extend: a {geometry.num_frames}-frame clip has {geometry.latent_frames} latent frame(s), "
                "none left after the prefix; use more num_frames"]
    p = []
    for kind, source in given.items():
        if not isinstance(source, (str, Path)):
            continue  # arrays (Python API) are checked as they are loaded
        problem = _media_problem(kind, Path(source), required_seconds(kind, geometry, extend_frames))
        if problem:
            p.append(where + problem)
    return p


def mode_conflict(given_names: list[str], image: object = None) -> str | None:
    """The line refusing two conditioning modes at once (an image and a given video, say), or None.
    ``audio_from_video`` is no mode: it applies to text and image prompts, and given media have no joint pass."""
    named = [f"--{k}" for k in given_names] + (["--image"] if image is not None and image != "" else [])
    if len(named) < 2:
        return None
    return (f"{' and '.join(named)} given together; choose one mode: --image (I2AV), --video (V2A), --audio (A2V) "
            "or --extend (continue a clip)")


def _media_problem(kind: str, path: Path, need_s: float) -> str | None:
    """Why the file at ``path`` cannot serve as the --``kind`` input, or None."""
    import av

    needs = "audio" if kind == "audio" else "video"
    if not path.is_file():
        return f"--{kind} {path}: file not found; give the path of a{'n' if needs == 'audio' else ''} {needs} file"
    try:
        with av.open(str(path)) as container:
            streams = container.streams.audio if needs == "audio" else container.streams.video
            if not streams:
                wanted = "a sound track (wav, mp3, video with sound)" if needs == "audio" else "frames (mp4, mov, ...)"
                return f"--{kind} {path}: no {needs} stream; give a file with {wanted}"
            stream = streams[0]
            seconds = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                       else container.duration / av.time_base if container.duration else None)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        return f"--{kind} {path}: cannot be decoded ({' '.join(str(e).split())}); re-encode it (ffmpeg -i IN out.mp4)"
    if seconds is not None and seconds < need_s - 1e-3:
        fix = " or a smaller extend_frames" if kind == "extend" else ""
        return f"--{kind} {path}: too short ({seconds:.2f} s, this needs {need_s:.2f} s); give a longer clip{fix}"
    return None


def _output_problems(cfg: InferenceConfig) -> list[str]:
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        return [f"output_dir {out} is a file; pass a folder (output_dir=...)"]
    existing = next(a for a in (out, *out.parents) if a.exists())  # the folder that would hold it
    if not existing.is_dir():
        return [f"output_dir {out}: {existing} is a file; pass another folder"]
    try:  # a real probe: os.access says yes to root on read-only mounts
        fd, probe = tempfile.mkstemp(prefix=".ovi-write-test-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return [f"output_dir {out} is not writable ({e.strerror} in {existing}); pass a writable folder"]
    p = []
    if cfg.overwrite and cfg.skip_existing:
        p.append("overwrite=true and skip_existing=true contradict each other; choose one")
    if cfg.skip_existing and cfg.seed == RANDOM_SEED:
        p.append("skip_existing needs a fixed seed (seed=-1 draws a new one each run); give seed=N")
    return p


def model_facts(cfg: InferenceConfig) -> tuple[InferenceConfig, ModelFacts, str | None]:
    """The config as a trained export's metadata amends it, the model's depth and text_len, its prompt style."""
    if cfg.random_weights:
        model_cfg, style = load_fusion_config(cfg.model), None
    else:
        from ovi.pipeline import apply_training_metadata  # header-only read of the fusion file

        cfg, model_cfg, style = apply_training_metadata(cfg)
    return cfg, ModelFacts(model_cfg.video.num_layers, model_cfg.video.text_len), style


def _token_counter(cfg: InferenceConfig) -> Callable[[str], int] | None:
    from ovi.codecs.text_encoder import clean_prompt, load_tokenizer

    if cfg.random_weights:
        from ovi.components import char_tokenizer

        tok = char_tokenizer()
    else:
        tok = load_tokenizer(cfg.checkpoints.resolve("tokenizer"))
    return lambda text: len(tok(clean_prompt(text)).input_ids)


def check_request(cfg: InferenceConfig, jobs: list[Job]) -> list[str]:
    """Check everything about a generation request before a model loads; return warnings, raise
    :class:`InvalidRequest` with every problem (one line each) otherwise."""
    from ovi.imaging import open_image
    from ovi.release import missing_release_files

    problems = settings_problems(cfg)
    if problems:  # the rest reads files the settings name
        raise InvalidRequest(problems)
    missing = missing_release_files(cfg)
    for path, how in missing:
        problems.append(f"release file missing: {path}; run `{how}`" if how.startswith("ovi-download")
                        else f"release file missing: {path}; {how}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"device={cfg.device} but no CUDA GPU is visible; pass device=cpu (slow) or run on a GPU host")
    problems += _output_problems(cfg)
    warnings = []
    facts, style = None, None
    if cfg.t2i_model and Path(cfg.t2i_model).exists() and not (Path(cfg.t2i_model) / "model_index.json").is_file():
        problems.append(f"t2i_model {cfg.t2i_model} has no model_index.json; give a diffusers pipeline folder "
                        "(save_pretrained) or a hub id like black-forest-labs/FLUX.1-Krea-dev")
    if not missing:
        cfg, facts, style = model_facts(cfg)
        problems += settings_problems(cfg, facts)
        trained = RELEASED_NUM_FRAMES.get(cfg.variant)
        if not cfg.random_weights and style is None and trained != cfg.num_frames:
            problems.append(f"num_frames={cfg.num_frames} but the {cfg.variant} model was trained on {trained} "
                            f"frames ({ClipGeometry.for_frames(trained).duration_s:.2f} s); set num_frames={trained} "
                            "or pick the variant of that length")
        area = RELEASED_AREA.get(cfg.variant)
        # A trained export (style from its metadata) was trained at its own size, not the variant's.
        if not cfg.random_weights and style is None and area and abs(cfg.area - area) > AREA_TOLERANCE * area:
            warnings.append(f"area={cfg.area} is more than 10% off the {cfg.variant} model's {area}; "
                            "results may suffer")
    count = None
    if facts is not None:
        try:
            count = _token_counter(cfg)
        except OSError as e:
            problems.append(str(e).replace("\n", " "))
    style_name = style or style_for_checkpoint(cfg.variant)
    for job in jobs:
        try:
            validate_prompt(job.prompt)
        except PromptError as e:
            problems.append(f"{job.where}: {e}")
            continue
        if count is not None:
            n = count(format_prompt(job.prompt, style_name))
            if n > facts.text_len:
                msg = (f"{job.where}: {n} tokens, over the model's {facts.text_len}: the end (with the audio "
                       "description) would be cut; shorten the prompt")
                if cfg.long_prompts == "error":
                    problems.append(msg)
                else:
                    warnings.append(msg + " (long_prompts=error refuses this)")
        if job.image:
            try:
                open_image(job.image)
            except (FileNotFoundError, ValueError) as e:
                problems.append(f"{job.where}: {e}")
    from ovi.modes import given_inputs

    given = given_inputs(cfg.video, cfg.audio, cfg.extend)
    if given:
        problems += given_media_problems(given, cfg.geometry, cfg.extend_frames)
        problems += [f"{job.where}: {c}" for job in jobs if job.image  # a prompts file's image and a given medium
                     for c in [mode_conflict(list(given), job.image)] if c]
    if problems:
        raise InvalidRequest(problems)
    return warnings
