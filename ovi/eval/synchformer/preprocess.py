"""A clip's frames and audio -> Synchformer's inputs, as MMAudio's av-benchmark prepares them for DeSync.

    frames uint8 [T, H, W, 3] @ fps -> 25 fps (nearest frame) -> shorter side 224 (bicubic, antialiased, rounded
    to uint8) -> centre crop 224 -> [-1, 1] -> segments [S, 16, 3, 224, 224] every 8 frames
    audio float [N] @ 16 kHz -> segments of 10240 samples every 5120 -> power mel (n_fft 1024, 400-sample
    Hann window, hop 160, 128 HTK bins, no filter normalisation) -> log(x + 1e-6) -> pad 65 -> 66 frames ->
    (x - mean) / (2 * std) with AST's AudioSet statistics -> [S, 66, 128]

The mel is written here (torchaudio, which av-benchmark uses, is not a dependency): an STFT with torch.stft and
the triangular HTK filter bank, both as torchaudio's ``MelSpectrogram`` defaults define them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ovi.eval.synchformer.config import WINDOW, SyncWindow

N_FFT, WIN_LENGTH, HOP = 1024, 400, 160
AST_MEAN, AST_STD = -4.2677393, 4.5689974  # AST's AudioSet log-mel statistics
LOG_EPS = 1e-6


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """[n_fft // 2 + 1, n_mels] triangles on the HTK mel scale from 0 Hz to Nyquist, peak 1 (unnormalised)."""
    freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    width = np.diff(edges)
    rel = edges[None, :] - freqs[:, None]  # [freqs, n_mels + 2]
    rising = -rel[:, :-2] / width[:-1]
    falling = rel[:, 2:] / width[1:]
    return torch.from_numpy(np.maximum(0.0, np.minimum(rising, falling))).float()


def log_mel(segments: torch.Tensor, n_mels: int, sample_rate: int) -> torch.Tensor:
    """[S, samples] -> normalised log-mel [S, frames, n_mels]."""
    spec = torch.stft(segments, N_FFT, HOP, WIN_LENGTH, torch.hann_window(WIN_LENGTH), center=True,
                      pad_mode="reflect", return_complex=True).abs() ** 2  # [S, freqs, frames]
    mel = (spec.transpose(1, 2) @ mel_filters(sample_rate, N_FFT, n_mels))  # [S, frames, n_mels]
    return torch.log(mel + LOG_EPS)


def audio_segments(audio: np.ndarray, spec_frames: int, n_mels: int, window: SyncWindow = WINDOW) -> torch.Tensor:
    """16 kHz mono [N] -> every segment's model input [S, spec_frames, n_mels] (S may be 0)."""
    n = (len(audio) - window.samples_per_segment) // window.sample_step + 1
    if n <= 0:
        return torch.zeros(0, spec_frames, n_mels)
    wav = torch.from_numpy(np.ascontiguousarray(audio, np.float32))
    segs = wav.unfold(0, window.samples_per_segment, window.sample_step)[:n]  # [S, samples]
    mel = log_mel(segs, n_mels, window.sample_rate)
    # Pad with zeros *before* normalising (the zero is a log value, as in the authors' transform order).
    mel = F.pad(mel, (0, 0, 0, max(0, spec_frames - mel.shape[1])))[:, :spec_frames]
    return (mel - AST_MEAN) / (2 * AST_STD)


def resample_frames(frames: np.ndarray, fps: float, window: SyncWindow = WINDOW) -> np.ndarray:
    """Frames at ``window.fps``: for each output time, the nearest source frame (the clip's duration kept)."""
    n_out = int(len(frames) / fps * window.fps + 1e-6)
    src = np.minimum(np.floor(np.arange(n_out) * fps / window.fps + 0.5).astype(int), len(frames) - 1)
    return frames[src]


def frames_to_model(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> [T, 3, size, size] in [-1, 1]: shorter side to ``size``, centre crop."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # [T, 3, H, W]
    h, w = x.shape[-2:]
    short, long = min(h, w), max(h, w)
    long_new = int(size * long / short)  # torchvision's size rule (truncates)
    new = (size, long_new) if h <= w else (long_new, size)
    if (h, w) != new:
        x = F.interpolate(x, size=new, mode="bicubic", align_corners=False, antialias=True)
        x = x.round().clamp(0, 255)  # the reference resizes uint8 frames
    top, left = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
    x = x[:, :, top:top + size, left:left + size]
    return x / 127.5 - 1.0  # (x / 255 - 0.5) / 0.5


def video_segments(frames: np.ndarray, fps: float, size: int, window: SyncWindow = WINDOW) -> torch.Tensor:
    """uint8 [T, H, W, 3] @ fps -> every segment [S, frames_per_segment, 3, size, size] (S may be 0)."""
    frames = resample_frames(frames, fps, window)
    n = (len(frames) - window.frames_per_segment) // window.frame_step + 1
    if n <= 0:
        return torch.zeros(0, window.frames_per_segment, 3, size, size)
    x = frames_to_model(frames[: (n - 1) * window.frame_step + window.frames_per_segment], size)
    return x.unfold(0, window.frames_per_segment, window.frame_step).permute(0, 4, 1, 2, 3)  # [S, f, 3, H, W]


def windows(segments: int, window: SyncWindow = WINDOW) -> list[range]:
    """The model inputs DeSync averages over: the first and the last ``window.segments`` segments."""
    if segments < window.segments:
        return []
    return [range(0, window.segments), range(segments - window.segments, segments)]

