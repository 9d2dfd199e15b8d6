"""The toy's vocoder: Griffin-Lim phase recovery from the 16 kHz log-mel, the documented stand-in for BigVGAN.

    log10 mel [B, 80, T] -> linear magnitude (mel filter bank pseudo-inverse) -> Griffin-Lim -> wave [B, 1, 256 T]

Why a substitute: a BigVGAN (even at 1/24 of the release width) needs adversarial training for hours to stop
buzzing, far beyond the toy's CPU budget; Griffin-Lim has no weights, keeps every onset where the mel has it
(the sync metric's audio side), and sounds like the toy's impacts, tones and speech. It has the vocoder's call
signature, so ``AudioCodec(vae, GriffinLimVocoder())`` decodes exactly as with BigVGAN.
"""
from __future__ import annotations

import torch
from torch import nn

from ovi.codecs.mel import HOP_LENGTH, N_FFT, WIN_LENGTH, MelFrontEnd

GRIFFIN_LIM_ITERS = 32
# MelFrontEnd centres frame t on sample t * hop + (n_fft - hop) / 2 - pad = t * hop + hop / 2 after its reflect
# padding; torch.istft(center=True) centres frame t on t * hop. The difference is this many samples.
FRAME_CENTRE_SHIFT = HOP_LENGTH // 2


class GriffinLimVocoder(nn.Module):
    """mel [B, 80, T] (log10, ``ovi.codecs.mel``) -> wave [B, 1, 256 T] in [-1, 1]; deterministic (seeded phase)."""

    def __init__(self, iters: int = GRIFFIN_LIM_ITERS) -> None:
        super().__init__()
        self.iters = iters
        basis = MelFrontEnd().mel_basis  # [80, 513]
        self.register_buffer("inverse_basis", torch.linalg.pinv(basis.double()).float(), persistent=False)  # [513, 80]
        self.register_buffer("window", torch.hann_window(WIN_LENGTH, periodic=True), persistent=False)

    def _stft(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.stft(wave, N_FFT, HOP_LENGTH, WIN_LENGTH, self.window, center=True, return_complex=True)

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(spec, N_FFT, HOP_LENGTH, WIN_LENGTH, self.window, center=True, length=length)

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        dtype = mel.dtype
        mel = mel.float()
        b, _, t = mel.shape
        length = t * HOP_LENGTH
        magnitude = (self.inverse_basis @ torch.pow(10.0, mel)).clamp(min=0.0)  # [B, 513, T]
        magnitude = torch.nn.functional.pad(magnitude, (0, 1))  # istft(center=True) of N samples has N/hop + 1 frames
        gen = torch.Generator(device="cpu").manual_seed(0)
        phase = torch.rand(magnitude.shape, generator=gen).to(mel.device) * 2 * torch.pi
        spec = torch.polar(magnitude, phase)
        for _ in range(self.iters):
            wave = self._istft(spec, length)
            rebuilt = self._stft(wave)
            spec = magnitude * torch.exp(1j * torch.angle(rebuilt))
        wave = self._istft(spec, length)  # [B, N]
        wave = torch.nn.functional.pad(wave, (FRAME_CENTRE_SHIFT, 0))[:, :length]
        return wave.clamp(-1.0, 1.0).unsqueeze(1).to(dtype)
