"""OviPipeline: (prompt, optional first frame) -> (video frames, waveform).

    prompt --validate/format--> UMT5 --> text embeddings (prompt, video negative, audio negative)
    image? --Wan2.2 VAE--> clean first latent frame
    seeded noise --denoise (CFG + SLG, two solvers)--> video latent [48, F, h, w], audio latent [L, 20]
    --Wan2.2 VAE / MMAudio VAE + BigVGAN--> video [3, T, H, W] in [-1, 1], audio [N] at 16 kHz
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from ovi.components import Components, load_components, random_components
from ovi.config import InferenceConfig, load_fusion_config
from ovi.denoise import Conditioning, GuidanceConfig, denoise
from ovi.prompts import format_for_checkpoint, validate_prompt

logger = logging.getLogger(__name__)

SIZE_MULTIPLE = 32  # output sides are multiples of 32 (VAE x16 and the 2x2 patch)
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class Generation:
    video: torch.Tensor  # [3, T, H, W] float in [-1, 1]
    audio: torch.Tensor  # [N] float in [-1, 1]
    fps: int
    sample_rate: int
    prompt: str
    seed: int


def size_for_area(aspect_w: float, aspect_h: float, area: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """(height, width) with the given aspect ratio and about ``area`` pixels, sides floored to ``multiple``.

    A square at area 720*720 gives 704x704, as the released 720x720_5s model runs.
    """
    if aspect_w <= 0 or aspect_h <= 0:
        raise ValueError(f"aspect ratio must be positive, got {aspect_w}:{aspect_h}")
    scale = math.sqrt(area / (aspect_w * aspect_h))
    h = max(multiple, int(aspect_h * scale) // multiple * multiple)
    w = max(multiple, int(aspect_w * scale) // multiple * multiple)
    return h, w


def open_image(image: str | Path | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if not Path(image).is_file():
        raise FileNotFoundError(f"image not found: {image}")
    return Image.open(image)


def load_image(image: Image.Image, height: int, width: int) -> torch.Tensor:
    """Resize to cover (height, width), centre-crop, scale to [-1, 1]: -> [3, 1, H, W] float32."""
    image = image.convert("RGB")
    scale = max(height / image.height, width / image.width)
    image = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))),
                         Image.Resampling.BICUBIC)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    pixels = np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1)[:, None] / 127.5 - 1.0


class OviPipeline:
    def __init__(self, components: Components, cfg: InferenceConfig) -> None:
        self.c = components
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device=cuda but no CUDA GPU is visible; pass device=cpu (slow) or run on a GPU host")
        self.dtype = DTYPES.get(cfg.dtype)
        if self.dtype is None:
            raise ValueError(f"dtype {cfg.dtype!r} unknown; choose one of {sorted(DTYPES)}")
        self.c.model.set_attention_backend(cfg.attention_backend)
        if cfg.fp8:
            from ovi.models.fp8 import store_linear_weights_fp8

            saved = store_linear_weights_fp8(self.c.model)
            logger.info("fp8 weight storage saved %.2f GB", saved / 1e9)
        if not cfg.cpu_offload:
            for module in self._modules():
                module.to(self.device)

    @classmethod
    def from_config(cls, cfg: InferenceConfig) -> OviPipeline:
        model_cfg = load_fusion_config(cfg.model)
        if cfg.random_weights:
            components = random_components(model_cfg, seed=cfg.seed)
        else:
            from ovi.cli.download import format_missing, missing_release_files

            missing = missing_release_files(cfg)
            if missing:
                raise FileNotFoundError(format_missing(missing))
            components = load_components(cfg, model_cfg, DTYPES[cfg.dtype])
        return cls(components, cfg)

    def _modules(self) -> list[torch.nn.Module]:
        return [self.c.model, self.c.text_encoder, self.c.video_vae, self.c.audio_codec]

    @contextlib.contextmanager
    def _on_device(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """With cpu_offload, a model is on the GPU only while it runs."""
        if self.cfg.cpu_offload:
            module.to(self.device)
        try:
            yield module
        finally:
            if self.cfg.cpu_offload:
                module.to("cpu")

    @torch.inference_mode()
    def generate(
        self,
        prompt: str,
        image: str | Path | Image.Image | None = None,
        seed: int | None = None,
        progress: bool = True,
    ) -> Generation:
        cfg = self.cfg
        seed = cfg.seed if seed is None else seed
        validate_prompt(prompt)
        text = format_for_checkpoint(prompt, cfg.variant)

        with self._on_device(self.c.text_encoder) as enc:
            pos, vneg, aneg = enc.encode([text, cfg.video_negative_prompt, cfg.audio_negative_prompt])
        cond = Conditioning(*(e.to(self.device, self.dtype) for e in (pos, vneg, aneg)))

        first_frame = None
        if image is not None:
            image = open_image(image)
            height, width = size_for_area(image.width, image.height, cfg.area)
            with self._on_device(self.c.video_vae) as vae:
                pixels = load_image(image, height, width).to(self.device)
                first_frame = vae.encode(pixels[None])[0].to(self.dtype)  # [48, 1, h, w]
        else:
            height, width = size_for_area(*cfg.aspect_ratio, cfg.area)
        vae = self.c.video_vae
        latent_shape = (vae.z_dim, vae.latent_frames(cfg.num_frames),
                        height // vae.spatial_compression, width // vae.spatial_compression)

        # Video and audio noise each come from a generator seeded with the same seed, as the release does,
        # so a seed reproduces the reference's sample.
        def noise(shape: tuple[int, ...]) -> torch.Tensor:
            gen = torch.Generator(self.device).manual_seed(seed)
            return torch.randn(shape, generator=gen, device=self.device, dtype=self.dtype)

        video_noise = noise(latent_shape)
        audio_noise = noise((cfg.audio_latents, self.c.model.cfg.audio.in_dim))
        guide = GuidanceConfig(cfg.solver, cfg.num_steps, cfg.shift, cfg.video_guidance_scale,
                               cfg.audio_guidance_scale, cfg.slg_layer)
        with self._on_device(self.c.model) as model:
            video_latent, audio_latent = denoise(model, video_noise, audio_noise, cond, guide, first_frame, progress)

        with self._on_device(self.c.video_vae) as vae:
            video = vae.decode(video_latent[None])[0].float().cpu()  # [3, T, H, W]
        with self._on_device(self.c.audio_codec) as codec:
            audio = codec.decode(audio_latent.T[None])[0].float().cpu()  # [N]
        return Generation(video, audio, cfg.fps, cfg.sample_rate, prompt, seed)
