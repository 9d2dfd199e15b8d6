"""The released frozen encoders (Wan2.2 VAE, MMAudio VAE, UMT5-XXL) behind the ``train.encoders`` protocol."""
from __future__ import annotations

from pathlib import Path

import torch

from ovi.codecs.audio_codec import AudioCodec
from ovi.codecs.audio_vae import load_audio_vae
from ovi.codecs.mel import MelFrontEnd
from ovi.codecs.text_encoder import TextEncoder
from ovi.codecs.video_vae import VideoVAE
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
    video = None
    if need_video:
        vae_path = Path(_need(cfg.video_vae, "video_vae"))
        # The release runs the VAE with bf16 weights and float32 arithmetic.
        loader = VideoVAE.from_pretrained if vae_path.is_dir() else VideoVAE.from_wan_checkpoint
        video = loader(vae_path, dtype=dtype, compute_dtype=torch.float32, device=device)
    # Small (0.17B), so it encodes in float32: the mel log needs the mantissa.
    audio_vae = load_audio_vae(_need(cfg.audio_vae, "audio_vae"), hidden_dim=None, device=device, dtype=torch.float32)
    return Encoders(text=text, video=video, audio=AudioCodec(audio_vae, vocoder=None, mel=MelFrontEnd().to(device)).eval().requires_grad_(False))
