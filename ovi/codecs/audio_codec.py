"""The audio codec Ovi's audio tower works in: 16 kHz waveform <-> MMAudio latent [B, 20, L].

    encode: wave [B, N] -> log-mel [B, 80, N // 256] -> VAE posterior mean [B, 20, N // 512]
    decode: latent [B, 20, L] -> VAE mel [B, 80, 2 L] -> BigVGAN -> wave [B, 512 L]

This is the reference's ``FeaturesUtils(mode='16k')`` ``wrapped_encode`` / ``wrapped_decode``: a 5 s
clip (121 video frames at 24 fps = 80,667 samples) gives 157 latents, decoded to 80,384 samples.
The DiT uses the channels-last layout [L, 20] per sample; transposing is the caller's job.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from ovi.codecs.mel import HOP_LENGTH, N_MELS, SAMPLE_RATE, MelFrontEnd
from ovi.codecs.vocoder import build_vocoder_on_meta, load_vocoder
from ovi.geometry import AUDIO_SAMPLES_PER_LATENT, audio_latents_for_samples

if TYPE_CHECKING:  # the MMAudio VAE loads diffusers (~5 s); the toy's fixed codec runs in this class without it
    from ovi.codecs.audio_vae import AudioVAE

__all__ = [
    "SAMPLE_RATE",
    "HOP_LENGTH",
    "N_MELS",
    "SAMPLES_PER_LATENT",
    "LATENT_RATE",
    "AudioCodec",
    "build_audio_codec_on_meta",
]

# One latent step = 2 mel frames (the VAE's TIME_STRIDE) of HOP_LENGTH = 512 samples = 32 ms; ovi.geometry owns
# the number and tests/test_geometry.py checks it against this codec's strides.
SAMPLES_PER_LATENT = AUDIO_SAMPLES_PER_LATENT
LATENT_RATE = SAMPLE_RATE / SAMPLES_PER_LATENT  # 31.25 latents per second
MEL_RATE = SAMPLE_RATE / HOP_LENGTH  # 62.5 mel frames per second


class AudioCodec(nn.Module):
    """Mel front end + MMAudio VAE + BigVGAN vocoder, frozen. Build it with ``AudioCodec.from_files``.

    ``vocoder=None`` gives an encode-only codec (training encodes audio and never vocodes).
    """

    def __init__(self, vae: AudioVAE, vocoder: nn.Module | None, mel: MelFrontEnd | None = None) -> None:
        super().__init__()
        self.mel = mel if mel is not None else MelFrontEnd()
        self.vae = vae
        self.vocoder = vocoder

    @classmethod
    def from_files(
        cls,
        vae_path: str | Path,
        vocoder_path: str | Path,
        *,
        vae_hidden_dim: int | None = None,
        vocoder_config: Mapping[str, Any] | str | Path | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "AudioCodec":
        """Load ``v1-16.pth`` and ``best_netG.pt`` (release layouts; strict key checks).

        ``vae_hidden_dim`` / ``vocoder_config`` (a mapping of bigvgan_vocoder.yml keys to override, or a
        YAML file) default (None) to the release sizes. Weights are normalised in float32, then cast to ``dtype``.
        """
        from ovi.codecs.audio_vae import RELEASE_HIDDEN_DIM, load_audio_vae

        hidden = RELEASE_HIDDEN_DIM if vae_hidden_dim is None else vae_hidden_dim
        vae = load_audio_vae(vae_path, hidden_dim=hidden, device=device, dtype=dtype)
        vocoder = load_vocoder(vocoder_path, config=vocoder_config, device=device, dtype=dtype)
        return cls(vae, vocoder, MelFrontEnd().to(device)).eval().requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.data_mean.dtype

    @property
    def device(self) -> torch.device:
        return self.vae.data_mean.device

    @staticmethod
    def num_latents(num_samples: int) -> int:
        """Latent length for a waveform of ``num_samples`` (80,640 or 80,667 -> 157).

        The padded mel front end gives ``N // 256`` frames and the VAE halves them, so this is ``N // 512``.
        """
        return audio_latents_for_samples(num_samples)

    @staticmethod
    def num_samples(num_latents: int) -> int:
        """Decoded waveform length for ``num_latents`` latents (157 -> 80,384)."""
        return num_latents * SAMPLES_PER_LATENT

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, N] at 16 kHz (clipped to [-1, 1]) -> posterior mean [B, 20, L] in the codec dtype."""
        mel = self.mel(wave.to(self.device))  # [B, 80, T], at least float32
        return self.vae.encode(mel.to(self.dtype))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent [B, 20, L] -> wave [B, 512 L] in [-1, 1], in the codec dtype."""
        mel = self.vae.decode(latent.to(device=self.device, dtype=self.dtype))  # [B, 80, 2 L]
        return self.vocode(mel)

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        """log-mel [B, 80, T] -> wave [B, 256 T]."""
        if self.vocoder is None:
            raise RuntimeError("this AudioCodec was built without a vocoder (encode only); load best_netG.pt to decode")
        return self.vocoder(mel.to(device=self.device, dtype=self.dtype)).squeeze(1)


def build_audio_codec_on_meta(
    vae_hidden_dim: int | None = None, vocoder_config: Mapping[str, Any] | str | Path | None = None
) -> AudioCodec:
    """The codec with meta tensors in the release files' layout (vocoder still weight-normed); sizes default
    (None) to the release's."""
    from ovi.codecs.audio_vae import RELEASE_HIDDEN_DIM, build_audio_vae_on_meta

    hidden = RELEASE_HIDDEN_DIM if vae_hidden_dim is None else vae_hidden_dim
    return AudioCodec(build_audio_vae_on_meta(hidden), build_vocoder_on_meta(vocoder_config))
