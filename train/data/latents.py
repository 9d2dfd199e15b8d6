"""The precomputed-latent sample format written by ``train.precompute`` and read by the trainer.

A latent dataset is a normal shard folder (format: data_pipeline/shards.py) plus two files::

    {dataset}/shards/latents-{NNNNNN}.tar, index.json
    {dataset}/null_prompt.safetensors   {"text": [L, 4096]}, metadata {"prompt": <the null prompt>}
    {dataset}/meta.json                 what was encoded, with which encoders and clip settings

Each sample has two members: ``<key>.latents.safetensors`` with tensors ``text`` [L_text, 4096] (UMT5,
unpadded), ``audio`` [L, 20] (MMAudio latents, channels last) and, for audio-video data, ``video``
[48, F, H/16, W/16] (normalised Wan2.2 latents); and ``<key>.json``, the source metadata with ``caption``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load, load_file, save, save_file

from data_pipeline.shards import Sample
from ovi.fileio import atomic_path

LATENTS_EXT = "latents.safetensors"
NULL_PROMPT_FILE = "null_prompt.safetensors"
META_FILE = "meta.json"


@dataclass
class LatentSample:
    text: torch.Tensor  # [L_text, 4096]
    audio: Optional[torch.Tensor]  # [L, 20]
    video: Optional[torch.Tensor]  # [48, F, h, w]
    meta: dict


def latent_sample(key: str, sample: LatentSample) -> Sample:
    """-> one shard sample: ``<key>.latents.safetensors`` and ``<key>.json``."""
    tensors = {"text": sample.text.contiguous()}
    if sample.audio is not None:
        tensors["audio"] = sample.audio.contiguous()
    if sample.video is not None:
        tensors["video"] = sample.video.contiguous()
    return Sample(key, {LATENTS_EXT: save(tensors)}, sample.meta)


def unpack_latents(files: dict[str, bytes]) -> LatentSample:
    if LATENTS_EXT not in files:
        raise ValueError(
            f"sample has members {sorted(files)}, no '{LATENTS_EXT}': is this a raw shard? set data.source=raw"
        )
    t = load(files[LATENTS_EXT])
    meta = json.loads(files["json"].decode("utf-8")) if "json" in files else {}
    return LatentSample(text=t["text"], audio=t.get("audio"), video=t.get("video"), meta=meta)


def save_null_prompt(dataset: Path, prompt: str, embedding: torch.Tensor) -> None:
    with atomic_path(dataset / NULL_PROMPT_FILE) as tmp:
        save_file({"text": embedding.contiguous()}, str(tmp), metadata={"prompt": prompt})


def load_null_prompt(dataset: str | Path, prompt: str) -> torch.Tensor:
    """The null-prompt embedding stored with a latent dataset; it must be the prompt the config asks for."""
    from safetensors import safe_open

    root = Path(dataset)
    if not (root / NULL_PROMPT_FILE).is_file() and (root.parent / NULL_PROMPT_FILE).is_file():
        root = root.parent  # data.shards named the shards/ folder
    path = root / NULL_PROMPT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: latent datasets come from `python -m train.precompute`")
    with safe_open(str(path), "pt") as f:
        stored = (f.metadata() or {}).get("prompt")
    if stored != prompt:
        raise ValueError(
            f"{path} holds the embedding of {stored!r} but objective.null_prompt is {prompt!r}; "
            "re-run train.precompute with this config or set objective.null_prompt to match"
        )
    return load_file(str(path))["text"]
