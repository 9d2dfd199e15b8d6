"""The sync proof: generate a clip for each caption of a held-out toy world and score it from its media alone.

    python -m ovi.toy.evaluate --release checkpoints/toy --prompts runs/toy/eval_world --out runs/toy/eval/fusion

For each ``{id}.json`` sidecar of ``--prompts`` (``ovi-toy make --seed 1``: clips the model never saw), the caption
is the prompt; the generated ``{id}.mp4`` gets that sidecar beside it, so ``ovi-toy score`` also checks prompt
adherence (kind, count, colours asked for). Writes ``scores.json`` (rows + summary) in ``--out``.
``--condition v2a`` gives the model the held-out clip's video and generates its sound (``a2v``: the audio, and
generates the picture): the sync figures then measure the generated stream against the real one
(``--conditioning noised|clean``: how the given stream enters each step, ``ovi.modes``); ``--condition i2v``
gives its first frame as the image of an image-to-video prompt. ``--lora PATH[:scale]``
generates with an adapter on the model (a toy LoRA, ``configs/train/lora_toy.yaml``). ``--audio-from-video
true|false`` overrides the preset's second, video-to-audio pass for text and image prompts,
``--sync-guidance-scale`` its sync guidance (``ovi.sync_guidance``); any other preset setting goes as
ovi-generate's ``key=value`` (``num_steps=50 solver=euler``).

Clip ``i`` (in name order) is sampled with seed ``i``: with one seed for every caption all clips start from the
same noise, and the toy models place their sound events by the noise (every clip then had the same onsets), so
52 clips would be a few samples, not 52.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

from tqdm import tqdm

from ovi.config import InferenceConfig
from ovi.imaging import unit_to_uint8
from ovi.media import read_audio, read_video, write_mp4
from ovi.toy.clip import SAMPLE_RATE
from ovi.presets import load_inference_config
from ovi.toy.cli import score
from ovi.toy.renoise import check_sigma, renoise_clip
from ovi.toy.sidecar import read_caption
from ovi.validation import settings_problems

logger = logging.getLogger(__name__)

PRESET = "toy"
SEED = 0  # clip i: SEED + i


def toy_config(release: Path, overrides: Sequence[str] = (), **settings: object) -> InferenceConfig:
    """The toy preset with its checkpoints read from ``release`` (a folder in checkpoints/toy's layout), plus
    ovi-generate's ``key=value`` overrides."""
    cfg = load_inference_config(PRESET, overrides)
    checkpoints = replace(cfg.checkpoints, root=str(release))
    if checkpoints.v2a and not checkpoints.resolve("v2a").exists():
        # The ablation folders of `ovi-toy rebuild --ablations` end at stage 2 (no V2A weights): their fusion
        # weights make the sound, as in any release without checkpoints.v2a.
        logger.warning("%s has no %s: the fusion weights make the sound", release, checkpoints.v2a)
        checkpoints = replace(checkpoints, v2a="")
    return replace(cfg, checkpoints=checkpoints, **settings)


CONDITIONS = ("none", "i2v", "v2a", "a2v")


def generate_folder(cfg: InferenceConfig, prompts: Path, out: Path, limit: int | None = None, condition: str = "none",
                    renoise: float | None = None) -> None:
    """Clip i of ``prompts`` (its caption the prompt, seed SEED + i) generated with ``cfg`` (``toy_config``)."""
    from ovi.pipeline import OviPipeline  # heavy: only when generating

    videos = sorted(prompts.glob("*.mp4"))[:limit]
    captions = [read_caption(v) for v in videos]  # a clip without its caption: named before the model loads
    pipe = OviPipeline.from_config(cfg)
    out.mkdir(parents=True, exist_ok=True)
    for i, (video, caption) in enumerate(tqdm(list(zip(videos, captions)), desc=f"generate {out.name}", unit="clip")):
        target = out / video.name
        if target.exists():
            continue  # resumable
        if renoise is not None:
            pixels, wave = renoise_clip(pipe, video, caption, renoise, seed=SEED + i)
            g = SimpleNamespace(video=pixels, audio=wave, fps=pipe.cfg.geometry.fps,
                                sample_rate=pipe.cfg.geometry.sample_rate)
        else:
            g = _generate(pipe, video, caption, condition, SEED + i)
        frames = unit_to_uint8(g.video.cpu().transpose(0, 1)).numpy()  # [T, H, W, 3]
        shutil.copy2(video.with_suffix(".json"), out / f"{video.stem}.json")
        write_mp4(target, frames, g.audio.float().cpu().numpy(), fps=g.fps, sample_rate=g.sample_rate)


def _generate(pipe: object, video: Path, caption: str, condition: str, seed: int) -> object:
    """One sample from noise for ``caption``, given the held-out clip's first frame (i2v), video (v2a) or audio
    (a2v), or none of them."""
    given = ({"video": video} if condition == "v2a" else
             {"audio": read_audio(video, SAMPLE_RATE)} if condition == "a2v" else
             {"image": read_video(video, max_frames=1)[0][0]} if condition == "i2v" else {})  # decoded when given
    return pipe.generate(caption, seed=seed, progress=False, **given)


def score_folder(folder: Path, shuffle_audio: bool = False) -> dict:
    rows, summary = score(folder, shuffle_audio)
    name = "scores_shuffled.json" if shuffle_audio else "scores.json"
    (folder / name).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1, default=float) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", type=Path, help="generate with this model folder (omit: score --out as it is)")
    p.add_argument("--prompts", type=Path, help="held-out world folder whose captions are the prompts")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--shuffle-audio", action="store_true", help="score with audio paired across clips (chance)")
    p.add_argument("--condition", choices=CONDITIONS, default="none",
                   help="i2v: each held-out clip's first frame as the image; v2a: generate the sound of its video; "
                        "a2v: the picture of its audio")
    p.add_argument("--conditioning", choices=("noised", "clean"), default=None,
                   help="with --condition: the given stream noised to each step's level or kept clean (default: the "
                        "toy preset's, clean: V2A then runs on its V2A weights)")
    p.add_argument("--lora", default="", help="adapter file(s) PATH[:scale], comma-separated, as ovi-generate lora=")
    p.add_argument("--audio-from-video", choices=("preset", "true", "false"), default="preset",
                   help="text or image prompts: the sound made again from the finished video (ovi-generate "
                        "audio_from_video=); default: the toy preset's setting")
    p.add_argument("--sync-guidance-scale", type=float, default=None,
                   help="sync guidance of V2A / A2V and the second pass (ovi-generate sync_guidance_scale=); "
                        "default: the toy preset's")
    p.add_argument("--video-guidance-scale", type=float, default=None,
                   help="the video's classifier-free guidance (ovi-generate video_guidance_scale=); "
                        "default: the toy preset's")
    p.add_argument("--shift", type=float, default=None,
                   help="the sampler's time shift (ovi-generate shift=); default: the toy preset's")
    p.add_argument("--renoise", type=float, default=None, metavar="SIGMA",
                   help="each held-out clip noised to SIGMA in [0, 1] and denoised back, instead of generated "
                        "from noise (ovi.toy.renoise)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="any other preset setting, as ovi-generate takes it (num_steps=50 solver=euler "
                        "audio_guidance_scale=1)")
    a = p.parse_args(argv)
    if a.overrides and not a.release:
        p.error("KEY=VALUE settings need --release (they change the generation)")
    if a.release:
        if a.prompts is None:
            p.error("--release needs --prompts")
        if a.renoise is not None:
            if a.condition != "none":
                p.error("--renoise re-makes both streams: it takes no --condition")
            try:
                check_sigma(a.renoise)
            except ValueError as e:
                p.error(str(e))
        settings: dict[str, object] = {"lora": a.lora}
        if a.conditioning is not None:
            settings["conditioning"] = a.conditioning
        for name in ("sync_guidance_scale", "video_guidance_scale", "shift"):
            if getattr(a, name) is not None:
                settings[name] = getattr(a, name)
        if a.condition in ("v2a", "a2v"):  # the given stream's own mode: no second pass
            settings["audio_from_video"] = False
        elif a.audio_from_video != "preset":  # text or image prompts: the preset's second pass unless set
            settings["audio_from_video"] = a.audio_from_video == "true"
        try:  # every setting checked as ovi-generate checks it, one line, before any model loads
            cfg = toy_config(a.release, a.overrides, **settings)
        except ValueError as e:  # ovi.config.load_config's one error for a bad key or value
            p.error(f"bad setting in {a.overrides}: {e}".splitlines()[0])
        problems = settings_problems(cfg)
        if problems:
            p.error("; ".join(problems))
        try:
            generate_folder(cfg, a.prompts, a.out, a.limit, a.condition, renoise=a.renoise)
        except FileNotFoundError as e:  # a clip without its caption (MissingCaption), or a release without a file
            p.error(str(e))
    print(json.dumps(score_folder(a.out, a.shuffle_audio), indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
