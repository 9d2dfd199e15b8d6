"""Generated samples on disk: an mp4 that says how it was made, a JSON sidecar, never a silent overwrite.

    <out>/<NNN>_<prompt slug>_seed<seed>.mp4   h264 + AAC; tags: title = prompt, comment = the JSON below
    <out>/<same stem>.json                     prompt, image, seed, variant, every setting, the full config
    <out>/<same stem>.png                      the text-to-image first frame (t2i2v only)
    <out>/<same stem>.wav                      with save_wav

An existing stem gets a new name (``..._seed5-2.mp4``) unless ``overwrite``; ``skip_existing`` (batch
resume) leaves a (prompt index, seed) whose mp4 exists alone.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ovi.config import InferenceConfig
from ovi.fileio import atomic_path, atomic_write_text
from ovi.media import write_mp4

SLUG_CHARS = 40
SIDECAR_SUFFIX = ".json"


def output_stem(index: int, prompt: str, seed: int) -> str:
    """``003_A_man_waves_at_the_camera_seed103``: the prompt's position, its start, the seed."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", re.sub(r"<[^>]*>", " ", prompt))[:SLUG_CHARS].strip("_") or "sample"
    return f"{index:03d}_{slug}_seed{seed}"


def _taken(stem: Path) -> bool:
    return stem.with_suffix(".mp4").exists() or stem.with_suffix(SIDECAR_SUFFIX).exists()


def claim_stem(out_dir: str | Path, stem: str, overwrite: bool = False) -> Path:
    """The path stem to write: ``stem`` itself if free (or ``overwrite``), else the first free ``stem-N``."""
    base = Path(out_dir) / stem
    if overwrite or not _taken(base):
        return base
    n = 2
    while _taken(base.with_name(f"{stem}-{n}")):
        n += 1
    return base.with_name(f"{stem}-{n}")


def exists(out_dir: str | Path, stem: str) -> bool:
    """Whether a sample with this stem was written (its mp4 is there)."""
    return (Path(out_dir) / stem).with_suffix(".mp4").exists()


def describe(generation: Any, cfg: InferenceConfig, image: str | None) -> dict[str, Any]:
    """What a sample records about itself: enough to remake it."""
    return {
        "prompt": generation.prompt,
        "image": image,
        "seed": generation.seed,
        "variant": cfg.variant,
        "settings": generation.settings,
        "fps": generation.fps,
        "sample_rate": generation.sample_rate,
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
    }


def save_generation(generation: Any, stem: Path, cfg: InferenceConfig, image: str | None = None) -> Path:
    """Write the mp4 (with the description in its tags), the JSON sidecar, and the t2i frame if any."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    record = describe(generation, cfg, image)
    text = json.dumps(record, indent=1, default=str)
    path = write_mp4(stem.with_suffix(".mp4"), generation.video, generation.audio, fps=generation.fps,
                     sample_rate=generation.sample_rate, wav_path=stem.with_suffix(".wav") if cfg.save_wav else None,
                     metadata={"title": generation.prompt, "comment": text})
    atomic_write_text(stem.with_suffix(SIDECAR_SUFFIX), text + "\n")
    if generation.first_frame is not None:
        with atomic_path(stem.with_suffix(".png")) as tmp:
            generation.first_frame.save(tmp, format="PNG")
    return path
