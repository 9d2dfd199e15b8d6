"""Sync guidance: the generated stream pushed toward what the *timing* of its given partner implies.

    v = v(x | partner) + scale * (v(x | partner) - v(x | partner moved by shift_s))

For a whole given partner stream: V2A (video given, the sound guided), A2V (the reverse) and the second pass of
``audio_from_video``. Classifier-free guidance contrasts the prompt with no prompt; this contrasts the partner with
the same partner rolled in time, which keeps all its content (scene, colours, voice) and moves only its events, so
the two branches differ by timing alone and the difference amplifies what the model learnt from it. Written here:
no kept library guides against a time-moved partner (diffusers' guiders contrast prompts or skipped layers). Each
guided pass costs twice the model calls; ovi/toy/README.md ("More routes") has what it does there.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ovi.denoise import VelocityFn
from ovi.geometry import AUDIO_LATENT_RATE, FPS, VAE_TEMPORAL_FACTOR

LATENT_FRAME_RATE = FPS / VAE_TEMPORAL_FACTOR  # video latent frames per second (6)


@dataclass(frozen=True)
class SyncGuidance:
    """``scale`` 0 turns it off; ``shift_s``: how far the partner is moved in the contrasting branch."""

    scale: float = 0.0
    shift_s: float = 1.0

    @property
    def active(self) -> bool:
        return self.scale > 0


def moved_in_time(video: torch.Tensor | None, audio: torch.Tensor | None, shift_s: float
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Video latents [C, F, h, w] / audio latents [L, C] rolled forward by ``shift_s`` seconds (at least one unit:
    a roll by nothing would contrast the partner with itself)."""
    if video is not None:
        video = torch.roll(video, max(1, round(shift_s * LATENT_FRAME_RATE)), dims=1)
    if audio is not None:
        audio = torch.roll(audio, max(1, round(shift_s * AUDIO_LATENT_RATE)), dims=0)
    return video, audio


def sync_guided(given: VelocityFn, moved: VelocityFn, scale: float, video: bool, audio: bool) -> VelocityFn:
    """The velocity of ``given`` with the streams named (``video`` / ``audio``) guided away from ``moved``'s."""

    def velocity(x_v: torch.Tensor, x_a: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g_v, g_a = given(x_v, x_a, t)
        m_v, m_a = moved(x_v, x_a, t)
        return (g_v + scale * (g_v - m_v) if video else g_v), (g_a + scale * (g_a - m_a) if audio else g_a)

    return velocity
