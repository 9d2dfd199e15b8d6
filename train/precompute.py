"""Encode raw shards once into latent shards (format: train/data/latents.py) that training then reads.

    python -m train.precompute --config configs/train/fusion.yaml --input data/clips --out data/latents/fusion
    torchrun --nproc_per_node 8 -m train.precompute --config ... --input ... --out ...   # one GPU per rank

The stage config decides what is encoded (``train.data.media.prepare_clip``, the trainer's own raw-clip path):
fusion -> the first ``data.video.num_frames`` frames (resized to ``data.video.height x width``) and the aligned
audio of that clip geometry; audio stages -> every consecutive audio window of each clip (variable mode keeps a
shorter last window of at least ``min_seconds``), keys ``<key>_c000``, ``<key>_c001``... Each input shard becomes
one output shard, written atomically, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from tqdm import tqdm

from data_pipeline.shards import Sample, index_entry, iter_tar_samples, read_index, write_index, write_shard
from ovi.fileio import atomic_write_text
from ovi.geometry import SAMPLE_RATE
from ovi.logs import setup_logging
from ovi.parallel.groups import leave_process_group
from train.config import TrainConfig, load_train_config
from train.data.latents import META_FILE, LatentSample, latent_sample, save_null_prompt
from train.data.media import prepare_clip
from train.encoders import Encoders, build_encoders

log = logging.getLogger(__name__)

PRECOMPUTE_BARRIER_HOURS = 72
STORE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def encode_clip(
    key: str, files: dict[str, bytes], cfg: TrainConfig, enc: Encoders, device: torch.device, dtype: torch.dtype
) -> Iterator[Sample]:
    """One raw sample -> zero or more latent samples (``prepare_clip``: every audio window of audio clips)."""
    clips = prepare_clip(key, files, cfg, rng=None)
    if not clips:
        return
    texts: dict[str, torch.Tensor] = {}  # caption -> [L_text, 4096]; windows of one clip differ in their speech
    for j, clip in enumerate(clips):
        if clip.caption not in texts:
            texts[clip.caption] = enc.text.encode([clip.caption])[0].to(dtype).cpu()
        text = texts[clip.caption]
        audio = enc.audio.encode(clip.audio[None].to(device))[0].T.to(dtype).cpu()  # [L, 20]
        if clip.video is not None:
            video = enc.video.encode(clip.video[None].to(device))[0].to(dtype).cpu()  # [48, F, h, w]
            meta = {**clip.meta, "caption": clip.caption}
            yield latent_sample(key, LatentSample(text=text, audio=audio, video=video, meta=meta))
            continue
        span = {"chunk_start_s": clip.audio_start / SAMPLE_RATE, "chunk_s": clip.audio.numel() / SAMPLE_RATE}
        meta = {**clip.meta, **span, "caption": clip.caption}
        yield latent_sample(f"{key}_c{j:03d}", LatentSample(text=text, audio=audio, video=None, meta=meta))


def precompute(
    cfg: TrainConfig, inputs: list[str], out: Path, rank: int, world: int, device: torch.device, store: str
) -> None:
    enc = build_encoders(cfg.encoders, cfg.has_video, device)
    dtype = STORE_DTYPES[store]
    shards_out = out / "shards"
    shards_out.mkdir(parents=True, exist_ok=True)
    work = [(d, s) for d, ds in enumerate(inputs) for s in read_index(ds).shards]
    mine = work[rank::world]
    with torch.no_grad():
        for d, shard in tqdm(mine, desc=f"precompute rank {rank}", disable=rank != 0):
            final = shards_out / f"latents-d{d}-{shard.path.stem}.tar"
            if final.exists():
                continue  # done by an earlier, interrupted run (shards are written atomically)
            write_shard(final, (sample for key, files in iter_tar_samples(shard.path)
                                for sample in encode_clip(key, files, cfg, enc, device, dtype)))
        null = enc.text.encode([cfg.objective.null_prompt])[0].to(dtype).cpu()
    if world > 1:
        dist.barrier()
    if rank == 0:
        outputs = sorted(shards_out.glob("latents-*.tar"))
        write_index(shards_out, [index_entry(p) for p in outputs], kind="latents")
        save_null_prompt(out, cfg.objective.null_prompt, null)
        meta = {"stage": cfg.stage, "inputs": inputs, "encoders": vars(cfg.encoders), "store_dtype": store,
                "video": vars(cfg.data.video), "audio": vars(cfg.data.audio)}
        atomic_write_text(out / META_FILE, json.dumps(meta, indent=1))
        log.info("wrote %d latent shards to %s", len(outputs), shards_out)


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the stage config the latents are for")
    p.add_argument("--input", nargs="+", help="raw dataset folders (default: data.shards of a data.source=raw config)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--store-dtype", choices=sorted(STORE_DTYPES), default="bf16")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    a = p.parse_args(argv)
    cfg = load_train_config(a.config, a.overrides)
    inputs = a.input or (cfg.data.shards if cfg.data.source == "raw" else None)
    if not inputs:
        p.error("--input is required when the config's data.source is 'precomputed'")
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    setup_logging(logging.INFO if rank == 0 else logging.WARNING, "%(asctime)s %(message)s")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1:
        # Only a barrier at the end; ranks may finish hours apart.
        dist.init_process_group("gloo", timeout=timedelta(hours=PRECOMPUTE_BARRIER_HOURS))
    precompute(cfg, inputs, a.out, rank, world, device, a.store_dtype)
    leave_process_group(sync=False)  # precompute() ends with its own barrier


if __name__ == "__main__":
    main()
