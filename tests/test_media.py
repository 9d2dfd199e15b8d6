"""mp4 writing (h264 + AAC in sync, atomic) and decoding back."""
from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

import ovi.media as media
from ovi.geometry import FPS, SAMPLE_RATE
from ovi.media import read_audio, read_video, to_uint8_frames, write_mp4

NUM_FRAMES, HEIGHT, WIDTH = 25, 48, 64
TONE_HZ = 440.0
AAC_FRAME = 1024  # samples
MAX_LAG_MS = 1.0
MS_PER_S = 1000.0


def _frames() -> np.ndarray:
    """A horizontal ramp with a white square moving 2 px per frame: [T, H, W, 3] uint8."""
    frames = np.zeros((NUM_FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    frames[..., 0] = np.linspace(0, 255, WIDTH, dtype=np.float32).astype(np.uint8)[None, None]
    for i in range(NUM_FRAMES):
        frames[i, 10:20, 2 * i : 2 * i + 10] = 255
    return frames


def _tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def _lag_ms(decoded: np.ndarray, reference: np.ndarray, max_ms: float = 200.0) -> float:
    """Delay of ``decoded`` behind ``reference`` (positive: audio late), by cross-correlation."""
    max_lag = round(max_ms / MS_PER_S * SAMPLE_RATE)
    padded = np.concatenate([np.zeros(max_lag, np.float32), decoded, np.zeros(max_lag + len(reference), np.float32)])
    scores = [float(np.dot(padded[max_lag + lag : max_lag + lag + len(reference)], reference))
              for lag in range(-max_lag, max_lag + 1)]
    return (int(np.argmax(scores)) - max_lag) / SAMPLE_RATE * MS_PER_S


def test_lag_estimator_sees_the_aac_priming_delay() -> None:
    tone = _tone()
    late = np.concatenate([np.zeros(AAC_FRAME, np.float32), tone])  # what a muxer without pts produces
    assert _lag_ms(late, tone) == pytest.approx(AAC_FRAME / SAMPLE_RATE * MS_PER_S)  # 64 ms
    assert _lag_ms(tone, tone) == 0.0


def test_roundtrip_frames_fps_audio_sync_and_wav(tmp_path: Path) -> None:
    frames, tone = _frames(), _tone()
    out, wav = tmp_path / "clip.mp4", tmp_path / "clip.wav"
    assert write_mp4(out, frames, tone, wav_path=wav) == out

    video, fps = read_video(out)
    assert video.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3) and video.dtype == np.uint8
    assert fps == FPS
    assert np.abs(video.astype(np.int16) - frames).mean() < 3.0  # lossy, but the same pictures

    audio = read_audio(out)
    assert audio.dtype == np.float32
    assert abs(len(audio) - len(tone)) <= AAC_FRAME
    assert abs(_lag_ms(audio, tone)) <= MAX_LAG_MS
    n = min(len(audio), len(tone))
    assert np.corrcoef(audio[:n], tone[:n])[0, 1] > 0.99

    wav_audio, wav_rate = sf.read(wav, dtype="float32")
    assert wav_rate == SAMPLE_RATE and len(wav_audio) == len(tone)
    assert np.abs(wav_audio - tone).max() < 1e-4  # 16-bit quantisation only


def test_float_vae_layout_and_torch_inputs(tmp_path: Path) -> None:
    frames = _frames()
    as_float = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0  # [3, T, H, W] in [-1, 1]
    assert np.array_equal(to_uint8_frames(as_float), frames)
    out = tmp_path / "f.mp4"
    write_mp4(out, as_float.bfloat16(), torch.from_numpy(_tone(0.5)).bfloat16())
    video, _ = read_video(io.BytesIO(out.read_bytes()))  # file objects work too (webdataset members)
    assert video.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(video.astype(np.int16) - frames).mean() < 4.0
    with pytest.raises(ValueError, match=r"video\[0\]"):
        to_uint8_frames(as_float[None])


def test_odd_sizes_raise_or_pad(tmp_path: Path) -> None:
    odd = _frames()[:, :47, :63]
    with pytest.raises(ValueError, match="pad_odd=True"):
        write_mp4(tmp_path / "odd.mp4", odd)
    assert not (tmp_path / "odd.mp4").exists()
    write_mp4(tmp_path / "odd.mp4", odd, pad_odd=True)
    video, _ = read_video(tmp_path / "odd.mp4")
    assert video.shape == (NUM_FRAMES, 48, 64, 3)


def test_silent_clip_has_no_audio_stream(tmp_path: Path) -> None:
    out = tmp_path / "silent.mp4"
    write_mp4(out, _frames())
    assert read_video(out)[0].shape[0] == NUM_FRAMES
    with pytest.raises(ValueError, match="no audio stream"):
        read_audio(out)
    with pytest.raises(ValueError, match="wav_path"):
        write_mp4(out, _frames(), None, wav_path=tmp_path / "x.wav")


def test_crash_mid_write_leaves_no_file_and_keeps_the_old_one(tmp_path: Path, monkeypatch) -> None:
    real_encode_audio = media._encode_audio

    def encode_then_crash(container, stream, audio, sample_rate):  # video is already muxed by now
        real_encode_audio(container, stream, audio[: len(audio) // 2], sample_rate)
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(media, "_encode_audio", encode_then_crash)
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_mp4(target, _frames(), _tone(), wav_path=tmp_path / "out.wav")
    assert list(tmp_path.iterdir()) == [], "a partial file was left behind"

    monkeypatch.setattr(media, "_encode_audio", real_encode_audio)
    write_mp4(target, _frames(), _tone())
    good = target.read_bytes()
    monkeypatch.setattr(media, "_encode_audio", encode_then_crash)
    with pytest.raises(RuntimeError):
        write_mp4(target, _frames()[::-1], _tone())
    assert target.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def _video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]


def test_same_frames_write_the_same_stream_after_memory_was_reused(tmp_path: Path) -> None:
    """One seed, one mp4: with mb-tree on, x264 depended on memory it never set, so a write after the process had
    freed memory (as after sampling) gave another stream. Memory is filled and freed before each write here."""
    there = _frames()
    frames = np.concatenate([there, there[::-1]] * 3)[:121]  # 5 s: the square swings left and right
    g = np.random.default_rng(0)
    streams = []
    for i in range(6):
        junk = [g.bytes(n << 16) for n in range(1, 33)]  # freed, then reused by the encoder's allocations
        del junk
        write_mp4(tmp_path / f"{i}.mp4", frames)
        streams.append(_video_packets(tmp_path / f"{i}.mp4"))
    assert all(s == streams[0] for s in streams[1:])
