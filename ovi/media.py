"""Media I/O: generated clips to h264 + AAC mp4 (and wav), and decoding for tests and the data pipeline.

Muxing goes through PyAV, in process (no temp wav, no subprocess, no dependence on which ffmpeg binary is
on PATH). The one trap: AAC encoders prime the stream with 1024 samples of delay, and ffmpeg only writes
the mp4 edit list that hides it when every audio frame carries ``pts`` and ``time_base``. Without them
the audio plays 64 ms late at 16 kHz (measured in ``shared/notes/ecosystem.md`` §5), 1.5 video frames of
lip-sync error. So every AudioFrame below gets an explicit pts in samples.

Writes are atomic: both files are first written to temporary names in the target folder and renamed
into place only once complete, so a crash never leaves a truncated mp4 (or a stale one half-replaced).
"""
from __future__ import annotations

import os
from fractions import Fraction
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import soundfile as sf
import torch

from ovi.fileio import atomic_path
from ovi.geometry import FPS, SAMPLE_RATE
from ovi.imaging import unit_to_uint8

VIDEO_CODEC = "libx264"
VIDEO_PIX_FMT = "yuv420p"  # the pixel format every player decodes; chroma is 2x2 subsampled -> even sizes
VIDEO_CRF = 18  # x264 constant-quality level: visually near-lossless, small files
# x264's macroblock-tree rate control depended on memory it never set: the same frames gave another stream (pixels
# off by up to ~20 levels) whenever the process had freed memory before, e.g. after sampling, so one seed wrote
# different mp4s (also gone with asm=0 or no lookahead). Without it, repeated writes are identical; the toy clip's
# stream is ~1.7x larger at the same crf.
VIDEO_X264_PARAMS = "mbtree=0"
AUDIO_CODEC = "aac"
AUDIO_BIT_RATE = 128_000
AAC_FRAME_SAMPLES = 1024  # samples per AAC frame (also its encoder delay)
UINT8_MAX = 255
WAV_SUBTYPE = "PCM_16"

ArrayLike = np.ndarray | torch.Tensor
PathLike = str | os.PathLike


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()  # numpy has no bf16; float32 holds every model output dtype exactly
        return x.numpy()
    return np.asarray(x)


def to_uint8_frames(video: ArrayLike) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 frames from uint8 ``[T, H, W, 3]`` or float ``[3, T, H, W]`` in [-1, 1].

    Float input is the video VAE's (clamped) output layout; values outside [-1, 1] are clipped and
    ``(x + 1) / 2 * 255`` is rounded to the nearest level. A torch tensor is quantised on its own device
    (in float32, since bf16 cannot hold the 256 levels' midpoints), so only uint8 crosses to the host.
    """
    if isinstance(video, torch.Tensor) and video.is_floating_point():
        _check_float_layout(tuple(video.shape))
        return unit_to_uint8(video.detach().float().transpose(0, 1)).contiguous().cpu().numpy()
    arr = _to_numpy(video)
    if arr.dtype == np.uint8:
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"uint8 video must be [T, H, W, 3], got shape {arr.shape}")
        return np.ascontiguousarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"video must be uint8 [T, H, W, 3] or float [3, T, H, W] in [-1, 1], got {arr.dtype}")
    _check_float_layout(arr.shape)
    levels = np.clip(arr, -1.0, 1.0)  # the one full-size float copy; the rest is in place
    levels += 1.0
    levels *= UINT8_MAX / 2
    np.rint(levels, out=levels)
    return np.ascontiguousarray(levels.astype(np.uint8).transpose(1, 2, 3, 0))


def _check_float_layout(shape: tuple[int, ...]) -> None:
    if len(shape) != 4 or shape[0] != 3:
        hint = " (drop the batch dimension: video[0])" if len(shape) == 5 and shape[0] == 1 else ""
        raise ValueError(f"float video must be [3, T, H, W] in [-1, 1], got shape {shape}{hint}")


def _even_frames(frames: np.ndarray, pad_odd: bool) -> np.ndarray:
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    if not pad_odd:
        raise ValueError(
            f"h264 ({VIDEO_PIX_FMT}) needs an even width and height, got {w}x{h}; crop or resize to even "
            "sizes, or pass pad_odd=True to repeat the last row/column"
        )
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _to_mono(audio: ArrayLike) -> np.ndarray:
    arr = _to_numpy(audio).astype(np.float32, copy=False)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"audio must be a mono waveform [N] (or [1, N]), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("audio contains NaN or inf; check the vocoder output")
    return arr


def _encode_video(container: av.container.OutputContainer, stream: av.VideoStream, frames: np.ndarray,
                  fps: Fraction) -> None:
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = i, 1 / fps
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))  # flush delayed (B-)frames


def _encode_audio(container: av.container.OutputContainer, stream: av.AudioStream, audio: np.ndarray,
                  sample_rate: int) -> None:
    time_base = Fraction(1, sample_rate)
    for start in range(0, len(audio), AAC_FRAME_SAMPLES):
        chunk = audio[None, start : start + AAC_FRAME_SAMPLES]  # [1 channel, n] planar float
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts, frame.time_base = start, time_base  # without these the audio lands 64 ms late
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_wav(path: PathLike, audio: ArrayLike, sample_rate: int = SAMPLE_RATE) -> Path:
    """Atomically write a mono 16-bit wav (samples clipped to [-1, 1])."""
    mono = np.clip(_to_mono(audio), -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(tmp, mono, sample_rate, subtype=WAV_SUBTYPE, format="WAV")
    return Path(path)


def write_mp4(
    path: PathLike,
    video: ArrayLike,
    audio: ArrayLike | None = None,
    fps: float = FPS,
    sample_rate: int = SAMPLE_RATE,
    wav_path: PathLike | None = None,
    *,
    pad_odd: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write h264 video (+ AAC audio starting with frame 0) to ``path`` atomically; optionally a wav too.

    ``video``: uint8 ``[T, H, W, 3]`` or float ``[3, T, H, W]`` in [-1, 1] (numpy or torch, any device).
    ``audio``: float mono ``[N]`` at ``sample_rate`` or None for a silent clip. Odd frame sizes raise
    unless ``pad_odd`` (then the last row/column is repeated). ``metadata``: mp4 container tags (e.g.
    ``title``, ``comment``), readable back with ``av.open(path).metadata``.
    """
    frames = _even_frames(to_uint8_frames(video), pad_odd)
    if len(frames) == 0:
        raise ValueError("video has no frames")
    mono = _to_mono(audio) if audio is not None else None
    if wav_path is not None and mono is None:
        raise ValueError("wav_path given but audio is None; pass the waveform or drop wav_path")
    rate = Fraction(fps).limit_denominator(1001)  # exact for 24 and for NTSC rates like 24000/1001
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            container.metadata.update(metadata or {})
            # every stream must exist before the first packet is muxed (that writes the mp4 header)
            video_stream = container.add_stream(
                VIDEO_CODEC, rate=rate, options={"crf": str(VIDEO_CRF), "x264-params": VIDEO_X264_PARAMS})
            video_stream.height, video_stream.width = frames.shape[1:3]
            video_stream.pix_fmt = VIDEO_PIX_FMT
            if mono is not None:
                audio_stream = container.add_stream(AUDIO_CODEC, rate=sample_rate, layout="mono")
                audio_stream.bit_rate = AUDIO_BIT_RATE
            _encode_video(container, video_stream, frames, rate)
            if mono is not None:
                _encode_audio(container, audio_stream, mono, sample_rate)
        if wav_path is not None:
            write_wav(wav_path, mono, sample_rate)
    return Path(path)


def read_video(path: PathLike | BinaryIO, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode the frames (all, or the first ``max_frames``): ``(uint8 [T, H, W, 3] RGB, fps)``.

    Accepts a path or a binary file object.
    """
    with av.open(path if hasattr(path, "read") else str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [f.to_ndarray(format="rgb24") for f in islice(container.decode(stream), max_frames)]
        rate = stream.average_rate or stream.guessed_rate
        if rate is None:
            raise ValueError(f"{path}: the video stream has no frame rate")
    if not frames:
        raise ValueError(f"{path}: the video stream has no frames")
    return np.stack(frames), float(rate)


def read_audio(path: PathLike | BinaryIO, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream as mono float32 ``[N]`` at ``sample_rate`` (channels averaged).

    Sample 0 is time 0 of the file: the decoder honours the mp4 edit list (AAC priming removed), and a
    stream that starts late is preceded by silence, so a lag against the video shows up in the samples.
    The tail is cut to the stream's recorded duration (the padding of the last AAC frame is dropped).
    """
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    start_s: float | None = None
    duration_s: float | None = None
    with av.open(path if hasattr(path, "read") else str(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: no audio stream (was it written with audio=None?)")
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        for frame in container.decode(stream):
            if start_s is None:
                start_s = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
            frame.pts = None  # the resampler counts samples itself; the start offset is applied below
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))  # buffered tail
    audio = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if duration_s is not None:  # drop the encoder's padding of the last AAC frame
        audio = audio[: round(duration_s * sample_rate)]
    offset = round((start_s or 0.0) * sample_rate)
    if offset > 0:
        audio = np.concatenate([np.zeros(offset, np.float32), audio])
    elif offset < 0:
        audio = audio[-offset:]
    return audio
