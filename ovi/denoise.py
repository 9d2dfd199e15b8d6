"""The joint denoising loop: classifier-free guidance per modality, skip-layer guidance, i2v.

Each step calls the fusion model twice: the positive branch (the prompt's text for both towers) and the
negative branch (each tower's own negative prompt, with fusion block ``slg_layer`` skipped). Guidance
``neg + scale * (pos - neg)`` runs in the latents' dtype, then each modality takes one solver step on
its own sampler. Image-to-video keeps the clean first latent frame in place before every call and
after the loop, and tells the model that frame is clean (t = 0 on its tokens).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ovi.models.fusion import FusionModel
from ovi.sampling import guidance, make_samplers


@dataclass
class Conditioning:
    """Text embeddings [L_i, text_dim] of the prompt and the two negative prompts."""

    positive: torch.Tensor
    video_negative: torch.Tensor
    audio_negative: torch.Tensor


@dataclass
class GuidanceConfig:
    solver: str = "unipc"
    num_steps: int = 50
    shift: float = 5.0
    video_scale: float = 4.0
    audio_scale: float = 3.0
    slg_layer: int = 0  # 0: no skip-layer guidance


def denoise(
    model: FusionModel,
    video_noise: torch.Tensor,
    audio_noise: torch.Tensor,
    text: Conditioning,
    cfg: GuidanceConfig,
    first_frame: torch.Tensor | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise -> clean latents. video_noise [C, F, H, W], audio_noise [L, C], first_frame [C, 1, H, W] (i2v)."""
    video_sampler, audio_sampler = make_samplers(cfg.solver, cfg.num_steps, cfg.shift)
    x_v, x_a = video_noise, audio_noise
    i2v = first_frame is not None
    for k in tqdm(range(cfg.num_steps), desc="denoising", disable=not progress):
        if i2v:
            x_v = _with_first_frame(x_v, first_frame)
        t = video_sampler.model_timestep(k, device=x_v.device)
        pos_v, pos_a = model([x_v], [x_a], t, [text.positive], [text.positive], first_frame_is_clean=i2v)
        neg_v, neg_a = model(
            [x_v], [x_a], t, [text.video_negative], [text.audio_negative],
            first_frame_is_clean=i2v, slg_layer=cfg.slg_layer or None,
        )
        pred_v = guidance(pos_v[0].to(x_v.dtype), neg_v[0].to(x_v.dtype), cfg.video_scale)
        pred_a = guidance(pos_a[0].to(x_a.dtype), neg_a[0].to(x_a.dtype), cfg.audio_scale)
        x_v = video_sampler.step(pred_v[None], t, x_v[None])[0]
        x_a = audio_sampler.step(pred_a[None], t, x_a[None])[0]
    if i2v:
        x_v = _with_first_frame(x_v, first_frame)
    return x_v, x_a


def _with_first_frame(x_v: torch.Tensor, first_frame: torch.Tensor) -> torch.Tensor:
    return torch.cat([first_frame.to(x_v.dtype), x_v[:, 1:]], dim=1)
