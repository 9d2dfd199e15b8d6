"""Rectified-flow objective on the sampler's own conventions (``ovi.flow.FLOW``, reference_ovi.md §9).

For data x and noise eps at noise level sigma in (0, 1): x_sigma = FLOW.noise(x, eps, sigma), target
FLOW.velocity(x, eps) = eps - x, model timestep FLOW.timestep(sigma) = 1000 * sigma. The samplers recover
x0 = FLOW.to_data(x_sigma, v, sigma), so a model trained on this target samples correctly.
In the fusion stage both modalities share one sigma per sample and get independent noise; with
``sigma.independent_prob`` > 0 that share of the samples draws the audio's sigma on its own.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F

from ovi.flow import FLOW
from train.config import ObjectiveConfig, SigmaConfig


def sample_sigma(cfg: SigmaConfig, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Noise levels [B] in (0, 1): uniform (the paper) or logit-normal, then the optional shift."""
    if cfg.sampling == "uniform":
        # (0, 1] rather than [0, 1): sigma = 0 is a no-op sample (x_sigma = x) with an undefined noise.
        sigma = 1.0 - torch.rand(batch, generator=generator, dtype=torch.float64)
    elif cfg.sampling == "logit_normal":
        z = torch.randn(batch, generator=generator, dtype=torch.float64) * cfg.logit_std + cfg.logit_mean
        sigma = torch.sigmoid(z)
    else:
        raise ValueError(f"unknown sigma sampling {cfg.sampling!r}; use 'uniform' or 'logit_normal'")
    if cfg.shift != 1.0:
        # The sampler's flow_shift: pushes samples towards high noise for large latents.
        sigma = FLOW.shift(sigma, cfg.shift)
    return sigma.float()


def add_noise(
    x: torch.Tensor, sigma: float | torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_sigma, velocity target) for one sample of any shape; noise drawn on the CPU for determinism."""
    eps = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
    x = x.float()
    return FLOW.noise(x, eps, sigma), FLOW.velocity(x, eps)


def onset_weights(audio: torch.Tensor, strength: float) -> torch.Tensor:
    """Loss weights [L] for a clean audio latent [L, C]: 1 + ``strength`` x its onset strength (the rise of the
    channel-mean level from the previous latent, spread over the latents either side), averaged to 1."""
    rise = (audio[1:].float() - audio[:-1].float()).mean(dim=1).clamp(min=0)  # [L-1]
    onset = torch.cat([rise.new_zeros(1), rise])
    onset = F.conv1d(onset[None, None], onset.new_tensor([[[0.5, 1.0, 0.5]]]), padding=1)[0, 0]
    return _emphasis(onset, strength)


def motion_weights(video: torch.Tensor, strength: float) -> torch.Tensor:
    """Loss weights [F, H, W] for a clean video latent [C, F, H, W]: 1 + ``strength`` x how much each position
    changes (mean |difference| over channels to the latent frames either side), averaged to 1. A still clip
    gets all ones; the tower pools them to its tokens (``train.strategies.token_weights``)."""
    d = (video[:, 1:].float() - video[:, :-1].float()).abs().mean(dim=0)  # [F-1, H, W]
    pad = d.new_zeros(1, *d.shape[1:])
    motion = 0.5 * (torch.cat([pad, d]) + torch.cat([d, pad]))  # [F, H, W]: the change into and out of each frame
    return _emphasis(motion, strength)


def _emphasis(signal: torch.Tensor, strength: float) -> torch.Tensor:
    """1 + ``strength`` x ``signal`` relative to its mean, averaged to 1 (all ones where the signal is 0)."""
    w = 1 + strength * signal / (signal.mean() + 1e-6)
    return w / w.mean()


@dataclass
class NoisedBatch:
    """Model inputs and targets for one micro-batch. Lists hold one tensor per sample."""

    t: torch.Tensor  # [B] float timesteps FLOW.timestep(sigma)
    sigma: torch.Tensor  # [B]
    video_in: Optional[list[torch.Tensor]]  # [48, F, H, W] each
    video_target: Optional[list[torch.Tensor]]  # fp32
    audio_in: Optional[list[torch.Tensor]]  # [L, 20] each
    audio_target: Optional[list[torch.Tensor]]
    video_context: list[torch.Tensor]  # [L_text, 4096], after dropout
    audio_context: list[torch.Tensor]
    video_clean_frames: int = 0  # leading latent frames kept clean (image-to-video: 1); t = 0 there, no loss
    audio_clean_latents: int = 0  # leading audio latents kept clean (a2v: all, audio extension: a prefix)
    audio_mask: Optional[torch.Tensor] = None  # [B, L] bool, True on real latents of padded short clips; None: all
    audio_sigma: Optional[torch.Tensor] = None  # [B] the audio's own sigma where drawn independently; None: sigma
    audio_weight: Optional[list[torch.Tensor]] = None  # [L] per-latent loss weights (audio_onset_weight); None: 1
    video_weight: Optional[list[torch.Tensor]] = None  # [F, H, W] per-position weights (video_motion_weight); None: 1

    @property
    def audio_t(self) -> torch.Tensor:
        """[B] the audio stream's timesteps: its own when drawn independently, else the shared ``t``."""
        return self.t if self.audio_sigma is None else FLOW.timestep(self.audio_sigma).to(self.t.device)


class FlowMatchingObjective:
    """Draws sigma, noise and condition dropout from one generator whose state is checkpointed."""

    def __init__(self, cfg: ObjectiveConfig, null_context: torch.Tensor, generator: torch.Generator):
        self.cfg = cfg
        self.null_context = null_context  # [L_null, 4096] embedding of cfg.null_prompt
        self.generator = generator

    def _dropout(self, contexts: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-sample condition dropout to the null prompt, independent per tower unless joint."""
        b = len(contexts)
        u_video = torch.rand(b, generator=self.generator)
        u_audio = u_video if self.cfg.text_dropout_joint else torch.rand(b, generator=self.generator)
        p_audio = self.cfg.text_dropout_video if self.cfg.text_dropout_joint else self.cfg.text_dropout_audio
        null = self.null_context
        video = [null.to(c) if u < self.cfg.text_dropout_video else c for c, u in zip(contexts, u_video)]
        audio = [null.to(c) if u < p_audio else c for c, u in zip(contexts, u_audio)]
        return video, audio

    def prepare(
        self,
        video: Optional[list[torch.Tensor]],
        audio: Optional[list[torch.Tensor]],
        text: list[torch.Tensor],
        dtype: torch.dtype,
        audio_mask: Optional[torch.Tensor] = None,
    ) -> NoisedBatch:
        """Noise a batch. ``video``/``audio``: clean latents per sample (None when the stage lacks them);
        ``audio_mask``: [B, L] real audio latents (padding gets no loss), passed through."""
        b = len(text)
        v2a_batch = self._v2a_batch(video, audio)
        sigma_cfg = replace(self.cfg.sigma, shift=self.cfg.v2a_sigma_shift) if v2a_batch else self.cfg.sigma
        sigma = sample_sigma(sigma_cfg, b, self.generator)
        audio_sigma = self._audio_sigma(sigma) if video is not None and audio is not None and not v2a_batch else None
        clean_v, clean_a = self.clean_units(video, audio, "v2a" if v2a_batch else self.cfg.mode)
        video_in = video_target = audio_in = audio_target = None
        if video is not None:
            pairs = [add_noise(x, float(s), self.generator) for x, s in zip(video, sigma)]
            # The conditioning frames (i2av's image, v2a's whole video, an extension's prefix) are seen clean.
            for (xs, _), x in zip(pairs, video):
                xs[:, :clean_v] = x[:, :clean_v].float()
            video_in = [xs.to(dtype) for xs, _ in pairs]
            video_target = [v for _, v in pairs]
        if audio is not None:
            levels = sigma if audio_sigma is None else audio_sigma
            pairs = [add_noise(x, float(s), self.generator) for x, s in zip(audio, levels)]
            for (xs, _), x in zip(pairs, audio):
                xs[:clean_a] = x[:clean_a].float()
            audio_in = [xs.to(dtype) for xs, _ in pairs]
            audio_target = [v for _, v in pairs]
        video_ctx, audio_ctx = self._dropout(text)
        device = (video or audio)[0].device
        return NoisedBatch(
            t=FLOW.timestep(sigma).to(device),
            sigma=sigma,
            video_in=video_in,
            video_target=video_target,
            audio_in=audio_in,
            audio_target=audio_target,
            video_context=[c.to(dtype) for c in video_ctx],
            audio_context=[c.to(dtype) for c in audio_ctx],
            video_clean_frames=clean_v,
            audio_clean_latents=clean_a,
            audio_mask=None if audio_mask is None else audio_mask.to(device),
            audio_sigma=audio_sigma,
            audio_weight=None if audio is None or self.cfg.audio_onset_weight <= 0 else
            [onset_weights(x, self.cfg.audio_onset_weight).to(device) for x in audio],
            video_weight=None if video is None or self.cfg.video_motion_weight <= 0 else
            [motion_weights(x, self.cfg.video_motion_weight).to(device) for x in video],
        )

    def _v2a_batch(self, video: Optional[list[torch.Tensor]], audio: Optional[list[torch.Tensor]]) -> bool:
        """Whether this t2av batch is one of ``v2a_prob``'s v2a batches; nothing is drawn at probability 0."""
        p = self.cfg.v2a_prob
        if p <= 0 or video is None or audio is None:
            return False
        return bool(torch.rand(1, generator=self.generator) < p)

    def _audio_sigma(self, sigma: torch.Tensor) -> torch.Tensor | None:
        """The audio's sigma [B] with ``independent_prob`` of the samples redrawn, or None (shared). Nothing is drawn
        at probability 0, so runs without it keep their random stream (and resume bit-exact)."""
        p = self.cfg.sigma.independent_prob
        if p <= 0:
            return None
        own = sample_sigma(self.cfg.sigma, sigma.shape[0], self.generator)
        redraw = torch.rand(sigma.shape[0], generator=self.generator) < p
        return torch.where(redraw, own, sigma)

    def clean_units(self, video: Optional[list[torch.Tensor]], audio: Optional[list[torch.Tensor]],
                    mode: str) -> tuple[int, int]:
        """(leading video latent frames, leading audio latents) given clean by this batch's ``mode`` (``cfg.mode``,
        or v2a for ``v2a_prob``'s batches); a whole modality is its longest sample's length. i2av / t2av draw the
        first frame's cleanliness per batch."""
        k = self.cfg.prefix_units
        clean_v = clean_a = 0
        if video is not None and mode in ("t2av", "i2av") and self.cfg.first_frame_clean_prob > 0:
            clean_v = int(bool(torch.rand(1, generator=self.generator) < self.cfg.first_frame_clean_prob))
        if video is not None and mode == "v2a":
            clean_v = max(x.shape[1] for x in video)
        if video is not None and mode == "video_extension":
            clean_v = k
        if audio is not None and mode == "a2v":
            clean_a = max(x.shape[0] for x in audio)
        if audio is not None and mode == "audio_extension":
            clean_a = k
        return clean_v, clean_a


def combine_losses(
    cfg: ObjectiveConfig, video_loss: Optional[torch.Tensor], audio_loss: Optional[torch.Tensor]
) -> torch.Tensor:
    """lambda_v * video + lambda_a * audio in fusion; the audio loss alone in the audio stages."""
    if video_loss is None:
        if audio_loss is None:
            raise ValueError("no modality in the batch")
        return audio_loss
    if audio_loss is None:
        return video_loss
    return cfg.loss_weight_video * video_loss + cfg.loss_weight_audio * audio_loss
