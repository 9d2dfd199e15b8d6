"""Which noise levels the model keeps a scene's objects through: real clips noised to sigma s and denoised back.

    python -m ovi.toy.evaluate --release checkpoints/toy --prompts runs/toy/eval_world --out runs/toy/eval/renoise_0.5 \
        --renoise 0.5

Both streams of a held-out clip are encoded and put on the flow-matching path the model was trained on,
``x_s = (1 - s) x0 + s eps``, then integrated back to 0 with the preset's guidance and the clip's caption as the
prompt (an SDEdit of the whole clip). At s = 0 the output is the codecs' reconstruction; as s grows more of the
clip must be made again by the model. The scores' ``visual_recall`` (the clip's true visual events found in the
output's pixels) then says up to which level the video tower keeps objects it is shown, and ``share_matched``
whether the sound it re-makes still lands on them. A text-prompted sample has to invent its objects at the levels
where they are erased here.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ovi.denoise import Conditioning, GuidanceConfig, GuidedVelocity
from ovi.flow import FlowMatching
from ovi.modes import load_given
from ovi.prompts import format_prompt

if TYPE_CHECKING:
    from ovi.pipeline import OviPipeline

DEFAULT_STEPS = 20


def check_sigma(sigma: float) -> None:
    """Refuse a level outside the flow's [0, 1] before anything loads."""
    if not 0.0 <= sigma <= 1.0:
        raise ValueError(f"--renoise takes a noise level in [0, 1] (0: the codecs' round trip, 1: pure noise), "
                         f"got {sigma}")


def clip_latents(pipe: OviPipeline, clip: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``clip`` (an mp4 of the model's geometry) through the release's codecs: video [C, F, h, w], audio [L, C]."""
    cfg, c = pipe.cfg, pipe.c
    frames = load_given("video", clip, cfg.geometry, cfg.area).frames  # [3, T, H, W], cut to the clip's frames
    wave = load_given("audio", clip, cfg.geometry, cfg.area).wave  # [N], cut to the clip's samples
    x0_v = c.video_vae.encode(frames[None].to(pipe.device))[0].to(pipe.dtype)
    x0_a = c.audio_codec.encode(wave[None].to(pipe.device))[0].T.to(pipe.dtype)
    return x0_v, x0_a


def caption_velocity(pipe: OviPipeline, caption: str, guide: GuidanceConfig) -> GuidedVelocity:
    """The model's velocity with ``caption`` as the prompt and the preset's negative prompts, guided by ``guide``."""
    cfg = pipe.cfg
    text = format_prompt(caption, pipe.prompt_style)
    cond = Conditioning(*pipe.c.text_encoder.encode([text, cfg.video_negative_prompt, cfg.audio_negative_prompt]))
    return GuidedVelocity(pipe.c.model, cond, guide)


@torch.no_grad()
def renoise_clip(pipe: OviPipeline, clip: Path, caption: str, sigma: float, seed: int,
                 steps: int = DEFAULT_STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """``clip`` (an mp4 of the model's geometry) noised to ``sigma`` with noise of ``seed``, denoised by ``pipe``.
    Returns video [3, T, H, W] in [-1, 1] and audio [N] at 16 kHz, on the CPU."""
    check_sigma(sigma)
    cfg, c, device, dtype = pipe.cfg, pipe.c, pipe.device, pipe.dtype
    x0_v, x0_a = clip_latents(pipe, clip)  # [C, F, h, w], [L, C]
    gen = torch.Generator(device).manual_seed(seed)
    eps_v = torch.randn(x0_v.shape, generator=gen, device=device, dtype=dtype)
    eps_a = torch.randn(x0_a.shape, generator=gen, device=device, dtype=dtype)
    flow = FlowMatching()
    x_v, x_a = flow.noise(x0_v, eps_v, sigma), flow.noise(x0_a, eps_a, sigma)

    guide = GuidanceConfig("euler", steps, 1.0, cfg.video_guidance_scale, cfg.audio_guidance_scale,
                           max(cfg.slg_layer, 0))
    velocity = caption_velocity(pipe, caption, guide)
    # The solvers' schedules (ovi.sampling) start at sigma 1; plain Euler steps over an even grid start anywhere.
    sigmas = torch.linspace(sigma, 0.0, steps + 1).tolist() if sigma > 0 else [0.0]  # 0: nothing to integrate
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        v_v, v_a = velocity(x_v, x_a, flow.timestep(torch.tensor([s], device=device)))
        x_v, x_a = x_v + (s_next - s) * v_v, x_a + (s_next - s) * v_a
    video = c.video_vae.decode(x_v[None], cfg.vae_chunk_frames, "cpu")[0].float()
    audio = c.audio_codec.decode(x_a.T[None])[0].float().cpu()
    return video, audio
