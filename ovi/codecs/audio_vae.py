"""MMAudio's 16 kHz 1-D mel VAE (the audio codec of Ovi's audio tower): diffusers' ``MMAudioAutoencoder``
with the release's load-time weight normalisation.

    mel [B, 80, T] -> (mel - mean) / std -> encoder -> moments [B, 40, T // 2] (posterior mean, logvar)
    latent [B, 20, L] -> decoder -> mel [B, 80, 2 L] * std + mean

Release sizes: ``AudioVAE(data_dim=80, embed_dim=20, hidden_dim=384)``, 171,657,378 tensor elements. The
released ``v1-16.pth`` uses diffusers' key names as they are (``data_mean``, ``encoder.down.0.block.0.conv1
.weight`` ...), but it holds weights *before* EDM2's forced weight normalisation, while diffusers' layers
expect normalised ones: ``normalize_weights`` does it once, in float32, before any cast (as the reference
engine does). The mel front end (``ovi.codecs.mel``) and the vocoder stay separate: diffusers' front end
and vocoder are the 44.1 kHz variants.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from diffusers.models.autoencoders.autoencoder_mmaudio import MMAudioAutoencoder, MMAudioMPConv1d, normalize
from torch import nn

from ovi.codecs.audio_checkpoint import read_vae_state_dict, to_at_least_float32
from ovi.codecs.mel import N_MELS
from ovi.release import AUDIO_VAE
from ovi.state_dict_utils import check_state_dict

LATENT_CHANNELS = 20
RELEASE_HIDDEN_DIM = 384
CHANNEL_MULT = (1, 2, 4)
NUM_RES_BLOCKS = 2
TIME_STRIDE = 2  # mel frames per latent: the encoder average-pools time once by 2 (the decoder repeats it)


class AudioVAE(MMAudioAutoencoder):
    """MMAudio's mel VAE. Load raw release weights, then call ``normalize_weights()`` once."""

    data_mean: torch.Tensor  # [1, 80, 1], loaded from the checkpoint (the values it was trained with)
    data_std: torch.Tensor

    def __init__(
        self, *, data_dim: int = N_MELS, embed_dim: int = LATENT_CHANNELS, hidden_dim: int = RELEASE_HIDDEN_DIM
    ) -> None:
        super().__init__(data_dim, embed_dim, hidden_dim, CHANNEL_MULT, NUM_RES_BLOCKS)
        self.embed_dim = embed_dim
        self.weights_normalized = False
        # Any (re)load brings raw weights back, which must be normalised again before use.
        self.register_load_state_dict_post_hook(AudioVAE._mark_raw)

    @staticmethod
    def _mark_raw(module: nn.Module, incompatible_keys: Any) -> None:
        module.weights_normalized = False

    @torch.no_grad()
    def normalize_weights(self) -> "AudioVAE":
        """EDM2 forced weight normalisation of every conv (once; later calls do nothing): each output
        channel becomes a vector of RMS 1 / sqrt(fan_in), so a unit-variance input gives a unit-variance output."""
        if not self.weights_normalized:
            for m in self.modules():
                if isinstance(m, MMAudioMPConv1d):
                    w = m.weight.to(torch.promote_types(m.weight.dtype, torch.float32))  # [O, I, K]
                    m.weight.copy_(normalize(w, dim=[1, 2]) / math.sqrt(w[0].numel()))
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
        return super().encode(mel)

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, 80, T] -> posterior mean [B, embed_dim, T // 2]."""
        return self.encode_moments(mel)[:, : self.embed_dim]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latent [B, embed_dim, L] -> mel [B, 80, 2 L]."""
        self._require_normalized()
        return super().decode(z)


def build_audio_vae_on_meta(hidden_dim: int = RELEASE_HIDDEN_DIM) -> AudioVAE:
    """The VAE with meta tensors: shapes and key names only, built instantly at any size."""
    with torch.device("meta"):
        return AudioVAE(hidden_dim=hidden_dim)


def load_audio_vae(
    path: str | Path,
    *,
    hidden_dim: int | None = RELEASE_HIDDEN_DIM,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AudioVAE:
    """Load ``v1-16.pth`` (strict), normalise the weights in float32, then move to ``device`` / ``dtype``.

    ``hidden_dim=None`` reads the width from the file (a reduced VAE such as the toy's, checkpoints/toy)."""
    state_dict = read_vae_state_dict(path)
    if hidden_dim is None:
        hidden_dim = int(state_dict["encoder.conv_in.weight"].shape[0])  # [hidden, 80, 3]
    vae = build_audio_vae_on_meta(hidden_dim)
    check_state_dict(
        {k: v.shape for k, v in vae.state_dict().items()},
        state_dict,
        source=f"MMAudio audio VAE file {path}",
        hint=f"The model was built with hidden_dim={hidden_dim} (release {RELEASE_HIDDEN_DIM}); "
        f"pass the matching size or the released {AUDIO_VAE.name}",
    )
    vae.load_state_dict(to_at_least_float32(state_dict), strict=True, assign=True)
    vae.normalize_weights()
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False)
