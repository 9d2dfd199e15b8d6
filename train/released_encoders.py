"""The released frozen encoders (Wan2.2 VAE, MMAudio VAE, UMT5-XXL) behind the ``train.encoders`` protocol."""
from __future__ import annotations

from pathlib import Path

import torch

from ovi.codecs.audio_vae import AudioVAE, load_audio_vae
from ovi.codecs.mel import MelFrontEnd
from ovi.codecs.text_encoder import TextEncoder
from ovi.codecs.video_vae import VideoVAE
from train.config import EncodersConfig
from train.encoders import Encoders

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


class AudioVAEEncoder:
    """Encode-only audio codec (``AudioCodec.encode`` without loading the vocoder): wave -> mel -> VAE mean."""

    def __init__(self, vae: AudioVAE, device: torch.device):
        self.mel = MelFrontEnd().to(device)
        self.vae = vae
        self.device = device

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        mel = self.mel(wave.to(self.device))  # [B, 80, T], at least float32
        return self.vae.encode(mel.to(self.vae.data_mean.dtype))  # [B, 20, L]


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
    audio_vae = load_audio_vae(_need(cfg.audio_vae, "audio_vae"), device=device, dtype=torch.float32)
    return Encoders(text=text, video=video, audio=AudioVAEEncoder(audio_vae, device))
