"""Audio analysis from the waveform alone: onset times (spectral flux, adaptive threshold) and loudness per
video frame. Used by the sync metric on any clip, generated or rendered.

Onsets: a centred STFT (16 ms Hann window, 4 ms hop) of log-compressed magnitudes; the flux is the summed
positive change per hop. A windowed frame's energy grows fastest when an attack crosses the window centre,
so the flux peak marks the attack time; parabolic interpolation refines it below the hop. A peak counts when
it is the largest within ``ONSET_MIN_GAP_S`` and clears a threshold that adapts to the local flux level
(median over ``ADAPT_WINDOW_S``) and to the clip's own flux spread (steady textures give none).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d, median_filter

WINDOW = 256  # samples: 16 ms at 16 kHz (a longer window smears the attack time)
HOP = 64  # samples: 4 ms
COMPRESSION = 10.0  # log(1 + C * |X|): loudness-like, so quiet and loud attacks both register
ONSET_MIN_GAP_S = 0.1  # two onsets closer than this are one
ADAPT_WINDOW_S = 0.5  # local median of the flux over this span
THRESHOLD_SPREAD = 6.0  # a peak must exceed the local median by this many robust deviations of the flux
MIN_PEAK_RATIO = 0.1  # ... and be at least this fraction of the clip's largest flux peak
# ... and at least this much flux in absolute terms (the waveform is peak-normalised first). A steady hum
# analysed with windows shorter than its period flickers up to ~9; a 4 ms beep attack gives ~25.
MIN_FLUX = 12.0


def spectral_flux(audio: np.ndarray) -> np.ndarray:
    """[M] positive log-spectral flux per hop; entry m compares the frames centred at (m - 1) and m hops.
    The waveform is peak-normalised first, so the flux does not depend on the clip's overall level."""
    audio = np.asarray(audio, np.float32)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    audio = audio / peak if peak > 0 else audio
    # Reflection padding: zero padding would make the clip's first sound an attack.
    x = np.pad(audio, (WINDOW // 2, WINDOW // 2), mode="reflect")
    count = 1 + (len(x) - WINDOW) // HOP
    idx = np.arange(WINDOW)[None, :] + HOP * np.arange(count)[:, None]  # [M, WINDOW] sample indices
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(WINDOW).astype(np.float32), axis=1))  # [M, bins]
    logmag = np.log1p(COMPRESSION * spec)
    flux = np.maximum(np.diff(logmag, axis=0), 0.0).sum(axis=1)
    return np.concatenate([[0.0], flux]).astype(np.float32)


def detect_onsets(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onset times in seconds (increasing) of the attacks in a mono waveform."""
    flux = spectral_flux(audio)
    if len(flux) < 3 or not np.any(flux > 0):
        return np.zeros(0)
    hop_s = HOP / sample_rate
    local = median_filter(flux, size=max(3, int(ADAPT_WINDOW_S / hop_s) | 1), mode="nearest")
    spread = 1.4826 * np.median(np.abs(flux - np.median(flux)))  # MAD as a robust standard deviation
    threshold = np.maximum(local + THRESHOLD_SPREAD * spread, max(MIN_PEAK_RATIO * flux.max(), MIN_FLUX))
    gap = max(1, int(ONSET_MIN_GAP_S / hop_s))
    is_peak = (flux == maximum_filter1d(flux, size=2 * gap + 1, mode="nearest")) & (flux > threshold)
    peaks = np.flatnonzero(is_peak)
    edge = WINDOW // (2 * HOP)  # frames whose window reaches past the clip see the padding, not the sound
    peaks = peaks[(peaks > edge) & (peaks < len(flux) - 1 - edge)]
    # Sub-hop refinement: the vertex of the parabola through the peak and its neighbours.
    a, b, c = flux[peaks - 1], flux[peaks], flux[peaks + 1]
    denom = a - 2 * b + c
    shift = np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, 1.0), 0.0)
    # Flux entry m sits between the frames centred at (m - 1) and m hops: its time is (m - 0.5) hops.
    return (peaks + shift - 0.5) * hop_s


def frame_rms(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """[num_frames] RMS of the waveform over each video frame's window (1 / fps long, centred on the frame's
    display time k / fps), the loudness a viewer hears while that frame is shown."""
    per_frame = sample_rate / fps
    centres = np.arange(num_frames) * per_frame
    lo = np.clip(np.rint(centres - per_frame / 2), 0, len(audio)).astype(np.int64)
    hi = np.clip(np.rint(centres + per_frame / 2), 0, len(audio)).astype(np.int64)
    energy = np.concatenate([[0.0], np.cumsum(np.asarray(audio, np.float64) ** 2)])
    return np.sqrt((energy[hi] - energy[lo]) / np.maximum(hi - lo, 1)).astype(np.float32)
