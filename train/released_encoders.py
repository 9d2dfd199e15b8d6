"""The released frozen encoders (Wan2.2 VAE, MMAudio VAE, UMT5-XXL) behind the ``train.encoders`` protocol."""
from __future__ import annotations

from pathlib import Path

import torch

from ovi.codecs.audio_codec import AudioCodec
from ovi.codecs.mel import MelFrontEnd
from ovi.codecs.text_encoder import TextEncoder
from ovi.components import load_audio_latent_codec, load_video_codec
from train.config import EncodersConfig
from train.encoders import Encoders

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _need(path: str | None, key: str) -> str:
    if not path:
        raise ValueError(f"encoders.{key} is not set; data.source=raw and train.precompute need the released codecs")
    return path


def load_released_encoders(cfg: EncodersConfig, need_video: bool, device: torch.device) -> Encoders:
    dtype = DTYPES[cfg.dtype]
    text_path = Path(_need(cfg.text_encoder, "text_encoder"))
    tokenizer = cfg.tokenizer or None
    if text_path.is_dir():  # transformers folder (Wan2.2-TI2V-5B-Diffusers/text_encoder)
        text = TextEncoder.from_pretrained(text_path, tokenizer=tokenizer, dtype=dtype, device=device)
    else:
        text = TextEncoder.from_wan_checkpoint(text_path, tokenizer=tokenizer, dtype=dtype, device=device)
    video = load_video_codec(Path(_need(cfg.video_vae, "video_vae")), dtype, device) if need_video else None
    audio_vae = load_audio_latent_codec(Path(_need(cfg.audio_vae, "audio_vae")), device)
    return Encoders(text=text, video=video, audio=AudioCodec(audio_vae, vocoder=None, mel=MelFrontEnd().to(device)).eval().requires_grad_(False))
