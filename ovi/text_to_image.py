"""Text -> image -> video: a first frame from a diffusers text-to-image pipeline, then image-to-video.

    prompt --video text only (speech and audio description dropped)--> FLUX.1 (or any diffusers
    text-to-image pipeline) at the video's aspect ratio, ``t2i_area`` pixels --> PIL image --> i2v

As the reference's t2i2v mode: the image is made at the text-to-video size scaled to about 1024*1024
(sides multiples of 16) with a CPU generator seeded with the video's seed and guidance 4.5, and then
prepared exactly like an uploaded first frame (``ovi.imaging.first_frame``).
"""
from __future__ import annotations

import logging
import math
from typing import Any

import torch
from PIL import Image

from ovi.prompts import parse_prompt

logger = logging.getLogger(__name__)
IMAGE_SIZE_MULTIPLE = 16  # latent 8x times FLUX's 2x2 packing


def image_size(height: int, width: int, area: int, multiple: int = IMAGE_SIZE_MULTIPLE) -> tuple[int, int]:
    """(height, width) with the video's aspect ratio at about ``area`` pixels, sides to the nearest ``multiple``."""
    scale = math.sqrt(area / float(height * width))
    return tuple(max(multiple, int(round(side * scale / multiple)) * multiple) for side in (height, width))


class TextToImage:
    """A loaded diffusers text-to-image pipeline, called with the prompt's video text."""

    def __init__(self, pipe: Any, steps: int = 28, guidance_scale: float = 4.5, area: int = 1024 * 1024) -> None:
        self.pipe, self.steps, self.guidance_scale, self.area = pipe, steps, guidance_scale, area

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: torch.device, dtype: torch.dtype, cpu_offload: bool = False,
                        **kwargs: Any) -> "TextToImage":
        """Any diffusers text-to-image pipeline by hub id or local folder (``FluxPipeline`` for FLUX.1)."""
        from diffusers import DiffusionPipeline

        try:
            pipe = DiffusionPipeline.from_pretrained(name_or_path, torch_dtype=dtype)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"cannot load the text-to-image pipeline {name_or_path!r} ({e}); give a diffusers "
                                    "folder (save_pretrained) or a hub id that is in the local cache") from e
        if cpu_offload and device.type == "cuda":
            pipe.enable_model_cpu_offload(device=device)  # the reference's choice: FLUX.1 is 12B parameters
        else:
            pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, **kwargs)

    def __call__(self, prompt: str, height: int, width: int, seed: int) -> Image.Image:
        """The first frame for ``prompt`` at the video size's aspect ratio."""
        h, w = image_size(height, width, self.area)
        logger.info("text-to-image first frame at %dx%d", h, w)
        out = self.pipe(parse_prompt(prompt).video_text, height=h, width=w, num_inference_steps=self.steps,
                        guidance_scale=self.guidance_scale, generator=torch.Generator().manual_seed(seed))
        return out.images[0]
