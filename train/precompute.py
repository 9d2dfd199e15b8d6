"""Encode raw shards once into latent shards (format: train/data/latents.py) that training then reads.

    python -m train.precompute --config configs/train/fusion.yaml --input data/clips --out data/latents/fusion
    torchrun --nproc_per_node 8 -m train.precompute --config ... --input ... --out ...   # one GPU per rank

The stage config decides what is encoded: fusion -> the first ``data.video.num_frames`` frames (resized to
``data.video.height x width``) and the aligned ``data.audio.seconds`` of audio; audio stages -> every
consecutive ``data.audio.seconds`` window of each clip (variable mode keeps a shorter last window of at least
``min_seconds``), keys ``<key>_c000``, ``<key>_c001``... Each input shard becomes one output shard, written to a
temporary name and renamed when complete, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tarfile
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from tqdm import tqdm

from data_pipeline.shards import add_tar_member, write_index
from ovi.fileio import atomic_path
from train.config import AUDIO_SAMPLE_RATE, TrainConfig, load_train_config
from train.data.latents import META_FILE, LatentSample, pack_latents, save_null_prompt
from train.data.media import audio_chunks, decode_audio, decode_json, decode_video, to_model_pixels
from train.data.shards import iter_tar_samples, read_index
from train.encoders import Encoders, build_encoders

log = logging.getLogger(__name__)

PRECOMPUTE_BARRIER_HOURS = 72
STORE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def encode_clip(
    key: str, files: dict[str, bytes], cfg: TrainConfig, enc: Encoders, device: torch.device, dtype: torch.dtype
) -> Iterator[tuple[str, LatentSample]]:
    """One raw sample -> zero or more (key, latents); clips too short for the stage give none."""
    meta = decode_json(files["json"])
    wave = decode_audio(files["wav"])
    a = cfg.data.audio
    text = enc.text.encode([meta["caption"]])[0].to(dtype).cpu()
    if cfg.has_video:
        need = round(a.seconds * AUDIO_SAMPLE_RATE)
        if wave.numel() < need or "mp4" not in files:
            return
        try:
            frames = decode_video(files["mp4"], cfg.data.video.num_frames)
        except ValueError:
            return
        pixels = to_model_pixels(frames, cfg.data.video.height, cfg.data.video.width)
        video = enc.video.encode(pixels[None].to(device))[0].to(dtype).cpu()  # [48, F, h, w]
        audio = enc.audio.encode(wave[None, :need].to(device))[0].T.to(dtype).cpu()  # [L, 20]
        yield key, LatentSample(text=text, audio=audio.contiguous(), video=video, meta=meta)
        return
    for j, (start, length) in enumerate(audio_chunks(wave.numel(), a.mode, a.seconds, a.min_seconds)):
        audio = enc.audio.encode(wave[None, start : start + length].to(device))[0].T.to(dtype).cpu()
        chunk_meta = {**meta, "chunk_start_s": start / AUDIO_SAMPLE_RATE, "chunk_s": length / AUDIO_SAMPLE_RATE}
        yield f"{key}_c{j:03d}", LatentSample(text=text, audio=audio.contiguous(), video=None, meta=chunk_meta)


def precompute(
    cfg: TrainConfig, inputs: list[str], out: Path, rank: int, world: int, device: torch.device, store: str
) -> None:
    enc = build_encoders(cfg.encoders, cfg.has_video, device)
    dtype = STORE_DTYPES[store]
    shards_out = out / "shards"
    shards_out.mkdir(parents=True, exist_ok=True)
    work = [(d, s) for d, ds in enumerate(inputs) for s in read_index(ds)]
    mine = work[rank::world]
    with torch.no_grad():
        for d, shard in tqdm(mine, desc=f"precompute rank {rank}", disable=rank != 0):
            final = shards_out / f"latents-d{d}-{shard.path.stem}.tar"
            if final.exists():
                continue  # done by an earlier, interrupted run
            with atomic_path(final) as tmp, tarfile.open(tmp, "w") as tf:
                for key, files in iter_tar_samples(shard.path):
                    for out_key, sample in encode_clip(key, files, cfg, enc, device, dtype):
                        for ext, data in pack_latents(sample).items():
                            add_tar_member(tf, f"{out_key}.{ext}", data)
        null = enc.text.encode([cfg.objective.null_prompt])[0].to(dtype).cpu()
    if world > 1:
        dist.barrier()
    if rank == 0:
        outputs = sorted(shards_out.glob("latents-*.tar"))
        entries = [{"name": p.name, "num_samples": sum(1 for _ in iter_tar_samples(p)), "num_bytes": p.stat().st_size}
                   for p in outputs]
        write_index(shards_out, entries, kind="latents")
        save_null_prompt(out, cfg.objective.null_prompt, null)
        meta = {"stage": cfg.stage, "inputs": inputs, "encoders": vars(cfg.encoders), "store_dtype": store,
                "video": vars(cfg.data.video), "audio": vars(cfg.data.audio)}
        (out / META_FILE).write_text(json.dumps(meta, indent=1))
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
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(message)s")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1:
        # Only a barrier at the end; ranks may finish hours apart.
        dist.init_process_group("gloo", timeout=timedelta(hours=PRECOMPUTE_BARRIER_HOURS))
    precompute(cfg, inputs, a.out, rank, world, device, a.store_dtype)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
