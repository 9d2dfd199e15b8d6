"""Sound sources of the toy world, all float32 at ``SAMPLE_RATE``, deterministic from a numpy Generator.

Pitch map (documented, also stated in captions): an impact or flash tone of colour ``c`` sounds at
``COLOUR_PITCH_HZ[c]``; impacts of a ball of radius r are scaled by ``(REFERENCE_RADIUS / r) ** 0.5`` (bigger
balls sound lower). Speech comes from espeak-ng and is cached on disk by (text, voice, speed).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter, resample_poly

from ovi.toy.clip import NUM_SAMPLES, SAMPLE_RATE
from ovi.toy.draw import COLOURS

COLOUR_PITCH_HZ: dict[str, float] = {
    "red": 330.0, "orange": 440.0, "yellow": 660.0, "green": 523.0, "blue": 262.0, "purple": 784.0,
    "cyan": 1175.0,  # held out of the default world (draw.HELD_OUT): above every palette pitch
}
assert set(COLOUR_PITCH_HZ) == set(COLOURS), "every colour needs a pitch"
REFERENCE_RADIUS = 0.09  # ball radius as a fraction of the frame side that sounds at the colour's pitch
NOISE_FLOOR = 0.002  # a faint room-noise bed under event scenes, so silence is never digital zero
PEAK = 0.8  # clips are normalised to this peak
ESPEAK_CACHE_ENV = "OVI_TOY_CACHE"  # folder for cached espeak-ng renders (default ~/.cache/ovi/toy)


def impact(pitch_hz: float, rng: np.random.Generator, decay_s: float = 0.06) -> np.ndarray:
    """A knock: a decaying sinusoid with an inharmonic partial and a 3 ms noise click at the attack."""
    n = round(6 * decay_s * SAMPLE_RATE)
    t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
    env = np.exp(-t / decay_s)
    tone = np.sin(2 * np.pi * pitch_hz * t) + 0.4 * np.sin(2 * np.pi * 2.76 * pitch_hz * t) * np.exp(-t / (decay_s / 3))
    click = rng.standard_normal(n).astype(np.float32) * np.exp(-t / 0.003)
    return ((tone * env + 0.5 * click) / 1.5).astype(np.float32)


def tone(pitch_hz: float, duration_s: float = 0.15, attack_s: float = 0.004, release_s: float = 0.04) -> np.ndarray:
    """A beep: a sine with its 2nd harmonic, a 4 ms linear attack and a linear release."""
    n = round(duration_s * SAMPLE_RATE)
    t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
    env = np.minimum(1.0, np.minimum(t / attack_s, (duration_s - t) / release_s)).clip(0.0, 1.0)
    return (env * (np.sin(2 * np.pi * pitch_hz * t) + 0.3 * np.sin(4 * np.pi * pitch_hz * t)) / 1.3).astype(np.float32)


def place(track: np.ndarray, sound: np.ndarray, start: int, gain: float = 1.0) -> None:
    """In place: add ``sound`` into ``track`` from sample ``start`` (cut at the end of the track)."""
    end = min(len(track), start + len(sound))
    if end > start >= 0:
        track[start:end] += gain * sound[: end - start]


def noise_bed(rng: np.random.Generator, level: float = NOISE_FLOOR) -> np.ndarray:
    return (rng.standard_normal(NUM_SAMPLES) * level).astype(np.float32)


def hum(rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz with odd harmonics and a slow (0.3 Hz) amplitude drift."""
    base = rng.choice([50.0, 60.0])
    t = np.arange(NUM_SAMPLES, dtype=np.float32) / SAMPLE_RATE
    wave = sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 3, 5, 7))
    return (wave * (1.0 + 0.1 * np.sin(2 * np.pi * 0.3 * t))).astype(np.float32)


def wind(rng: np.random.Generator) -> np.ndarray:
    """Low-passed noise (one-pole filters) with a slow swell: steady wind or distant traffic."""
    x = rng.standard_normal(NUM_SAMPLES).astype(np.float32)
    for _ in range(2):
        x = lfilter([0.04], [1.0, -0.96], x).astype(np.float32)
    t = np.arange(NUM_SAMPLES, dtype=np.float32) / SAMPLE_RATE
    return x * (1.0 + 0.2 * np.sin(2 * np.pi * 0.2 * t + rng.uniform(0, 2 * np.pi)))


def rain(rng: np.random.Generator, drops_per_s: float = 3000.0) -> np.ndarray:
    """Rain-like texture: a dense Poisson shower of tiny high-passed clicks over soft noise. Dense enough
    (about 120 drops per 40 ms) that no single drop stands out as an event."""
    x = np.zeros(NUM_SAMPLES, np.float32)
    n = rng.poisson(drops_per_s * NUM_SAMPLES / SAMPLE_RATE)
    x[rng.integers(0, NUM_SAMPLES, n)] += rng.uniform(0.3, 1.0, n).astype(np.float32)
    x = lfilter([1.0, -1.0], [1.0, -0.7], x).astype(np.float32)  # drops are bright ticks, not thumps
    return x + 0.3 * wind(rng)


def normalise(track: np.ndarray, peak: float = PEAK) -> np.ndarray:
    m = float(np.abs(track).max())
    return (track * (peak / m)).astype(np.float32) if m > 0 else track.astype(np.float32)


def _cache_dir() -> Path:
    return Path(os.environ.get(ESPEAK_CACHE_ENV, Path.home() / ".cache" / "ovi" / "toy"))


def speech(text: str, voice: str = "en-us", speed_wpm: int = 160, pitch: int = 50) -> np.ndarray:
    """espeak-ng saying ``text``, as float32 mono at ``SAMPLE_RATE`` (cached on disk: synthesis is the slow
    part of the world, and espeak-ng renders are deterministic)."""
    key = hashlib.sha1(f"{text}|{voice}|{speed_wpm}|{pitch}|{SAMPLE_RATE}".encode()).hexdigest()[:16]
    cached = _cache_dir() / f"speech_{key}.npy"
    if cached.exists():
        return np.load(cached)
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed; the face scenes need it (apt-get install espeak-ng), "
                           "or leave 'face' out of --kinds")
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-w", str(wav_path), text],
                       check=True, capture_output=True)
        wav, rate = sf.read(wav_path, dtype="float32")
    if wav.ndim == 2:
        wav = wav.mean(axis=1)
    g = gcd(SAMPLE_RATE, rate)
    out = resample_poly(wav, SAMPLE_RATE // g, rate // g).astype(np.float32)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = cached.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp_file, out)
    tmp_file.replace(cached)  # atomic: parallel makers never read half a file
    return out
