"""The 16 kHz log-mel front end that feeds MMAudio's audio VAE (Ovi's ``FeaturesUtils(mode='16k')``).

waveform [B, N] in [-1, 1] at 16 kHz -> log10 mel [B, 80, N // 256] (for N >= 768).

The filter bank is librosa's default ("Slaney" mel scale, area-normalised triangles) recomputed here
with the same float64 arithmetic and the same float32 roundings, so it equals ``librosa.filters.mel``
bit for bit without importing librosa (checked against the golden ``mel_basis`` in the tests).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16_000
N_FFT = 1024
WIN_LENGTH = 1024
HOP_LENGTH = 256
N_MELS = 80
F_MIN = 0.0
F_MAX = 8_000.0
# The waveform is clipped to this range before the STFT (the release feeds up to +-1.4 unclipped audio).
WAVE_CLIP = 1.0
# sqrt(re^2 + im^2 + MAG_EPS): keeps the gradient of the magnitude finite at exact zeros.
MAG_EPS = 1e-9
# log10(max(mel, LOG_FLOOR)): silence maps to -5.
LOG_FLOOR = 1e-5
# Reflect padding on each side so that frame t is centred on sample t * hop + hop / 2 with center=False.
PAD = (N_FFT - HOP_LENGTH) // 2

# Slaney mel scale (librosa's htk=False): linear below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def _hz_to_slaney_mel(hz: torch.Tensor) -> torch.Tensor:
    mel = hz / _SLANEY_HZ_PER_MEL
    break_mel = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
    log_part = break_mel + torch.log(hz / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return torch.where(hz >= _SLANEY_BREAK_HZ, log_part, mel)


def _slaney_mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    hz = mel * _SLANEY_HZ_PER_MEL
    break_mel = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
    log_part = _SLANEY_BREAK_HZ * torch.exp(_SLANEY_LOG_STEP * (mel - break_mel))
    return torch.where(mel >= break_mel, log_part, hz)


def _numpy_linspace(start: float, stop: float, num: int) -> torch.Tensor:
    # numpy's formula (start + i * step, last point set to stop); torch.linspace rounds differently.
    step = (stop - start) / (num - 1)
    out = start + torch.arange(num, dtype=torch.float64) * step
    out[-1] = stop
    return out


def slaney_mel_filterbank(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
) -> torch.Tensor:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) (Slaney scale and norm), float32 [n_mels, n_fft//2+1]."""
    fft_hz = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (sample_rate / n_fft)  # [F]
    lo, hi = _hz_to_slaney_mel(torch.tensor([f_min, f_max], dtype=torch.float64)).tolist()
    edges_hz = _slaney_mel_to_hz(_numpy_linspace(lo, hi, n_mels + 2))  # [M + 2]
    widths = edges_hz.diff()  # [M + 1]
    ramps = edges_hz[:, None] - fft_hz[None, :]  # [M + 2, F]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    triangles = torch.clamp(torch.minimum(rising, falling), min=0.0)
    # librosa stores the triangles in float32 and then scales them in place (float64 math, float32 store).
    area_norm = 2.0 / (edges_hz[2:] - edges_hz[:-2])  # [M]
    return (triangles.float().double() * area_norm[:, None]).float()


class MelFrontEnd(nn.Module):
    """waveform [B, N] -> log10 mel [B, n_mels, frames], frames = (N + 2*pad - n_fft) // hop + 1.

    Runs in at least float32 whatever the input dtype: ``torch.stft`` has no bfloat16 CPU kernel and
    the log of small magnitudes needs the mantissa (the engine never encodes audio in bf16 anyway).
    Keep the module itself in float32: casting it to bf16 would round the filter bank.
    """

    mel_basis: torch.Tensor
    window: torch.Tensor

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_fft: int = N_FFT,
        win_length: int = WIN_LENGTH,
        hop_length: int = HOP_LENGTH,
        n_mels: int = N_MELS,
        f_min: float = F_MIN,
        f_max: float = F_MAX,
    ) -> None:
        super().__init__()
        self.sample_rate, self.n_fft, self.win_length, self.hop_length = sample_rate, n_fft, win_length, hop_length
        self.pad = (n_fft - hop_length) // 2
        # Derived constants, not weights: rebuilt on construction, so kept out of the state_dict.
        self.register_buffer(
            "mel_basis", slaney_mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max), persistent=False
        )
        self.register_buffer("window", torch.hann_window(win_length, periodic=True), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        return (num_samples + 2 * self.pad - self.n_fft) // self.hop_length + 1

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, N] -> log10 mel [B, n_mels, frames] in promote(wave.dtype, float32)."""
        dtype = torch.promote_types(wave.dtype, torch.float32)
        wave = wave.to(device=self.mel_basis.device, dtype=dtype).clamp(-WAVE_CLIP, WAVE_CLIP)
        wave = F.pad(wave.unsqueeze(1), (self.pad, self.pad), mode="reflect").squeeze(1)  # [B, N + 2*pad]
        spec = torch.stft(
            wave,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(dtype),
            center=False,
            onesided=True,
            return_complex=True,
        )  # [B, n_fft // 2 + 1, frames]
        magnitude = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + MAG_EPS)
        mel = torch.matmul(self.mel_basis.to(dtype), magnitude)  # [B, n_mels, frames]
        return torch.log10(torch.clamp(mel, min=LOG_FLOOR))
