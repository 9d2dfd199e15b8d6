"""MMAudio's 16 kHz 1-D mel VAE (the audio codec of Ovi's audio tower), written by hand.

No package ships this model (there is no ``mmaudio`` on PyPI), so it is reimplemented here, key for key
compatible with the released ``v1-16.pth`` (a plain state_dict: raw MPConv1D weights, two learnable
output gains, and the per-bin ``data_mean`` / ``data_std`` [1, 80, 1] used to normalise the mel).

    mel [B, 80, T] -> (mel - mean) / std -> encoder -> moments [B, 40, T // 2] (posterior mean, logvar)
    latent [B, 20, L] -> decoder -> mel [B, 80, 2 L] * std + mean

Release sizes: ``AudioVAE(data_dim=80, embed_dim=20, hidden_dim=384)``, 171,657,378 tensor elements.
The checkpoint holds weights *before* EDM2 weight normalisation; ``load_audio_vae`` normalises them once,
in float32, and only then casts to the requested dtype (as the reference engine does).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovi.codecs.audio_checkpoint import VAE_RELEASE_FILE, read_vae_state_dict, to_at_least_float32
from ovi.codecs.audio_vae_layers import AttnBlock1D, Downsample1D, MPConv1D, ResnetBlock1D, Upsample1D, mp_silu
from ovi.codecs.mel import N_MELS
from ovi.state_dict_utils import check_state_dict

LATENT_CHANNELS = 20
RELEASE_HIDDEN_DIM = 384
CHANNEL_MULT = (1, 2, 4)
NUM_RES_BLOCKS = 2
KERNEL_SIZE = 3
# The one temporal down/up-sampling sits after encoder level 0 (and before decoder level 0).
RESAMPLE_LEVEL = 0
# Activations are clipped to +-CLIP_ACT after every block.
CLIP_ACT = 256.0


class _Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlock1D list) and an optional down/up-sampler."""

    def __init__(self, blocks: list[ResnetBlock1D]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)


class _Middle(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock1D(channels, channels, KERNEL_SIZE)
        self.attn_1 = AttnBlock1D(channels)
        self.block_2 = ResnetBlock1D(channels, channels, KERNEL_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x))).clamp(-CLIP_ACT, CLIP_ACT)


class Encoder1D(nn.Module):
    """mel [B, data_dim, T] -> moments [B, 2 * embed_dim, T // 2]. (The release has no per-level attention.)"""

    def __init__(self, data_dim: int, embed_dim: int, hidden_dim: int) -> None:
        super().__init__()
        # Scalar gain of conv_out, stored as (gain - 1): zero-initialised, trained.
        self.learnable_gain = nn.Parameter(torch.zeros([]))
        self.conv_in = MPConv1D(data_dim, hidden_dim, KERNEL_SIZE)
        self.down = nn.ModuleList()
        ch = hidden_dim
        for level, mult in enumerate(CHANNEL_MULT):
            out = hidden_dim * mult
            blocks = [ResnetBlock1D(ch if i == 0 else out, out, KERNEL_SIZE) for i in range(NUM_RES_BLOCKS)]
            stage = _Level(blocks)
            if level == RESAMPLE_LEVEL:
                stage.downsample = Downsample1D(out)
            self.down.append(stage)
            ch = out
        self.mid = _Middle(ch)
        self.conv_out = MPConv1D(ch, 2 * embed_dim, KERNEL_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h).clamp(-CLIP_ACT, CLIP_ACT)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class Decoder1D(nn.Module):
    """latent [B, embed_dim, L] -> normalised mel [B, data_dim, 2 L]."""

    def __init__(self, data_dim: int, embed_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.learnable_gain = nn.Parameter(torch.zeros([]))
        ch = hidden_dim * CHANNEL_MULT[-1]
        self.conv_in = MPConv1D(embed_dim, ch, KERNEL_SIZE)
        self.mid = _Middle(ch)
        # Built deepest first but stored shallowest first, so `up.<level>` keys match the encoder's levels.
        stages: list[_Level] = []
        for level in reversed(range(len(CHANNEL_MULT))):
            out = hidden_dim * CHANNEL_MULT[level]
            blocks = [ResnetBlock1D(ch if i == 0 else out, out, KERNEL_SIZE) for i in range(NUM_RES_BLOCKS + 1)]
            stage = _Level(blocks)
            if level == RESAMPLE_LEVEL + 1:
                stage.upsample = Upsample1D(out, KERNEL_SIZE)
            stages.insert(0, stage)
            ch = out
        self.up = nn.ModuleList(stages)
        self.conv_out = MPConv1D(ch, data_dim, KERNEL_SIZE)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            for block in stage.block:
                h = block(h).clamp(-CLIP_ACT, CLIP_ACT)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class AudioVAE(nn.Module):
    """MMAudio's mel VAE. Load raw release weights, then call ``normalize_weights()`` once."""

    data_mean: torch.Tensor
    data_std: torch.Tensor

    def __init__(
        self, *, data_dim: int = N_MELS, embed_dim: int = LATENT_CHANNELS, hidden_dim: int = RELEASE_HIDDEN_DIM
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        # Placeholders: the checkpoint's values are the ones the model was trained with (they are not
        # MMAudio's DATA_MEAN_80D / DATA_STD_80D source constants), so they are always loaded from it.
        self.register_buffer("data_mean", torch.zeros(1, data_dim, 1))
        self.register_buffer("data_std", torch.ones(1, data_dim, 1))
        self.encoder = Encoder1D(data_dim, embed_dim, hidden_dim)
        self.decoder = Decoder1D(data_dim, embed_dim, hidden_dim)
        self.weights_normalized = False
        # Any (re)load brings raw weights back, which must be normalised again before use.
        self.register_load_state_dict_post_hook(AudioVAE._mark_raw)

    @staticmethod
    def _mark_raw(module: nn.Module, incompatible_keys: Any) -> None:
        module.weights_normalized = False

    @torch.no_grad()
    def normalize_weights(self) -> "AudioVAE":
        """Apply the EDM2 forced weight normalisation to every MPConv1D (once; later calls do nothing)."""
        if not self.weights_normalized:
            for m in self.modules():
                if isinstance(m, MPConv1D):
                    m.normalize_weight()
            self.weights_normalized = True
        return self

    def _require_normalized(self) -> None:
        if not self.weights_normalized:
            raise RuntimeError(
                "AudioVAE holds raw checkpoint weights: call normalize_weights() after load_state_dict "
                "(load_audio_vae does both)"
            )

    def encode_moments(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, 80, T] -> posterior parameters [B, 2 * embed_dim, T // 2] (mean, then logvar unclamped)."""
        self._require_normalized()
        return self.encoder((mel - self.data_mean) / self.data_std)

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, 80, T] -> posterior mean [B, embed_dim, T // 2]."""
        return self.encode_moments(mel)[:, : self.embed_dim]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latent [B, embed_dim, L] -> mel [B, 80, 2 L]."""
        self._require_normalized()
        return self.decoder(z) * self.data_std + self.data_mean


def build_audio_vae_on_meta(hidden_dim: int = RELEASE_HIDDEN_DIM) -> AudioVAE:
    """The VAE with meta tensors: shapes and key names only, built instantly at any size."""
    with torch.device("meta"):
        return AudioVAE(hidden_dim=hidden_dim)


def load_audio_vae(
    path: str | Path,
    *,
    hidden_dim: int = RELEASE_HIDDEN_DIM,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AudioVAE:
    """Load ``v1-16.pth`` (strict), normalise the weights in float32, then move to ``device`` / ``dtype``."""
    state_dict = read_vae_state_dict(path)
    vae = build_audio_vae_on_meta(hidden_dim)
    check_state_dict(
        {k: v.shape for k, v in vae.state_dict().items()},
        state_dict,
        source=f"MMAudio audio VAE file {path}",
        hint=f"The model was built with hidden_dim={hidden_dim} (release {RELEASE_HIDDEN_DIM}); "
        f"pass the matching size or the released {VAE_RELEASE_FILE}",
    )
    vae.load_state_dict(to_at_least_float32(state_dict), strict=True, assign=True)
    vae.normalize_weights()
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False)
