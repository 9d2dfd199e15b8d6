"""Voice-activity check: does a clip's audio contain speech at all?

Used by the caption stage to reject captions that put words in <S>…<E> on a clip nobody speaks in. The
rule is deliberately simple and errs toward "speech" (a false "speech" only lets a caption through; a false
"no speech" would reject a good clip): a 30 ms frame is *voiced* when it is loud enough and periodic at a
voice pitch (normalised autocorrelation peak for 70–400 Hz); speech has voiced frames that start and stop at
syllable rate. Silence, noise, wind, rain and steady tones or hum have no such onsets. Music with a steady
pulse of pitched notes can pass as speech (a known limit of any energy/pitch VAD).
"""
from __future__ import annotations

import numpy as np

FRAME_S = 0.03
HOP_S = 0.01
PITCH_RANGE_HZ = (70.0, 400.0)
MIN_LEVEL_DB = -50.0  # dBFS floor for a voiced frame
BELOW_PEAK_DB = 35.0  # and no quieter than this under the clip's loudest frame
MIN_PERIODICITY = 0.45  # normalised autocorrelation peak in the pitch range
MIN_RUN_FRAMES = 3  # a voiced run shorter than this (30 ms) is not a syllable
MIN_VOICED_SHARE = 0.05
MIN_ONSETS_PER_S = 0.5  # syllable / word onsets; a steady tone has one in the whole clip


def voiced_frames(audio: np.ndarray, rate: int) -> np.ndarray:
    """bool [num_frames]: which 30 ms frames (10 ms hop) of mono ``audio`` are loud and voice-periodic."""
    n, hop = round(FRAME_S * rate), round(HOP_S * rate)
    if len(audio) < n:
        return np.zeros(0, bool)
    count = 1 + (len(audio) - n) // hop
    idx = np.arange(n)[None, :] + hop * np.arange(count)[:, None]
    frames = audio.astype(np.float64)[idx]  # [F, n]
    frames -= frames.mean(axis=1, keepdims=True)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = (level > MIN_LEVEL_DB) & (level > level.max() - BELOW_PEAK_DB)
    spec = np.fft.rfft(frames, 2 * n, axis=1)
    corr = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :n]  # autocorrelation per frame
    lo, hi = int(rate / PITCH_RANGE_HZ[1]), min(n - 1, int(rate / PITCH_RANGE_HZ[0]))
    periodicity = corr[:, lo : hi + 1].max(axis=1) / np.maximum(corr[:, 0], 1e-12)
    return loud & (periodicity > MIN_PERIODICITY)


def speech_stats(audio: np.ndarray, rate: int) -> tuple[float, float]:
    """(share of voiced frames, voiced-run onsets per second)."""
    voiced = voiced_frames(audio, rate)
    if voiced.size == 0:
        return 0.0, 0.0
    edges = np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    runs = (ends - starts) >= MIN_RUN_FRAMES
    duration_s = len(audio) / rate
    return float(voiced.mean()), float(runs.sum() / duration_s)


def has_speech(audio: np.ndarray, rate: int) -> bool:
    share, onsets = speech_stats(audio, rate)
    return share >= MIN_VOICED_SHARE and onsets >= MIN_ONSETS_PER_S
