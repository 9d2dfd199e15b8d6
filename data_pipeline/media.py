"""Thin wrappers over the ffmpeg/ffprobe CLIs and soundfile: probe, decode to numpy, encode numpy frames, read wav.

(Writing wav is ``ovi.media.write_wav``, shared with generation.)

The CLIs (not PyAV) are used because they handle every container, variable frame rates and A/V alignment the
way players do, and a crash in a codec stays in a child process instead of killing a worker.
"""
from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator, Optional, Sequence

import numpy as np
import soundfile as sf


class MediaError(RuntimeError):
    """ffmpeg/ffprobe could not read or write a file; the message carries ffmpeg's own last lines."""


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise FileNotFoundError(f"{binary} not found on PATH; install ffmpeg (e.g. apt-get install ffmpeg)")
    return path


def run_ffmpeg(args: Sequence[str], *, stdin: Optional[bytes] = None, binary: str = "ffmpeg") -> bytes:
    """Run ffmpeg (quiet, no prompts) and return stdout; raise MediaError with stderr's tail on failure."""
    cmd = [_require(binary), "-nostdin", "-hide_banner", "-loglevel", "error", *args]
    if binary == "ffprobe":
        cmd.remove("-nostdin")
    proc = subprocess.run(cmd, input=stdin, capture_output=True)
    if proc.returncode != 0:
        raise MediaError(f"{binary} failed ({proc.returncode}): {_message(proc.stderr)}")
    return proc.stdout


_POINTER = re.compile(r" @ 0x[0-9a-f]+")


def _message(stderr: bytes) -> str:
    """ffmpeg's last lines, without its per-run pointer addresses (manifests must not depend on the run)."""
    tail = stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
    return _POINTER.sub("", " | ".join(tail)) or "no message"


@dataclass
class ProbeInfo:
    duration_s: float
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0  # average frame rate
    variable_fps: bool = False
    video_codec: str = ""
    audio_codec: str = ""
    audio_sample_rate: int = 0


def _rate(text: str) -> float:
    num, _, den = text.partition("/")
    return float(num) / float(den) if den and float(den) != 0 else float(num or 0)


def probe(path: str | Path) -> ProbeInfo:
    """Container and stream metadata of ``path``; MediaError when ffprobe cannot read it."""
    out = run_ffmpeg(["-print_format", "json", "-show_format", "-show_streams", str(path)], binary="ffprobe")
    meta = json.loads(out)
    streams = meta.get("streams", [])
    # Cover art is a "video" stream with one frame: it does not make an audio file a video.
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not s.get("disposition", {}).get("attached_pic")), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = float(meta.get("format", {}).get("duration") or 0.0)
    info = ProbeInfo(duration_s=duration, has_video=video is not None, has_audio=audio is not None)
    if video is not None:
        width, height = int(video.get("width") or 0), int(video.get("height") or 0)
        rotation = _rotation(video)
        if rotation in (90, 270):
            width, height = height, width
        info.width, info.height = width, height
        info.fps = _rate(video.get("avg_frame_rate", "0/1"))
        real = _rate(video.get("r_frame_rate", "0/1"))
        info.variable_fps = bool(info.fps and real and abs(real - info.fps) > 0.01 * real)
        info.video_codec = video.get("codec_name", "")
    if audio is not None:
        info.audio_codec = audio.get("codec_name", "")
        info.audio_sample_rate = int(audio.get("sample_rate") or 0)
    return info


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return abs(int(side["rotation"])) % 360
    return abs(int(stream.get("tags", {}).get("rotate", 0))) % 360


def verify_decodes(path: str | Path) -> None:
    """Decode every stream to nowhere; MediaError on the first decoding error (truncated or corrupt data)."""
    run_ffmpeg(["-xerror", "-err_detect", "explode", "-i", str(path), "-f", "null", "-"])


def _frame_args(path, fps, width, start_s, duration_s, select, vf) -> list[str]:
    filters = [vf] if vf else []
    if fps is not None:
        filters.append(f"fps={fps}")
    if select is not None:
        expr = "+".join(f"eq(n\\,{int(i)})" for i in sorted(set(select)))
        filters.append(f"select={expr}")
    if width is not None:
        filters.append(f"scale={int(width)}:-2:flags=area")
    args = ["-ss", f"{start_s:.6f}"] if start_s > 0 else []
    args += ["-i", str(path)]
    if duration_s is not None:
        args += ["-t", f"{duration_s:.6f}"]
    args += ["-map", "0:v:0", "-an"]
    if filters:
        args += ["-vf", ",".join(filters)]
    # PPM frames carry their own size, so no second probe is needed to reshape the stream.
    return [*args, "-fps_mode", "passthrough", "-f", "image2pipe", "-c:v", "ppm", "pipe:1"]


def decode_frames(
    path: str | Path,
    *,
    vf: str = "",
    fps: Optional[float] = None,
    width: Optional[int] = None,
    start_s: float = 0.0,
    duration_s: Optional[float] = None,
    select: Optional[Sequence[int]] = None,
    bgr: bool = False,
) -> np.ndarray:
    """Frames of ``path`` as uint8 [T, H, W, 3] (RGB, or BGR for OpenCV), optionally resampled to ``fps``,
    scaled to ``width`` (height keeps the aspect, rounded to even) and restricted to the frame indices in
    ``select`` (counted after resampling). ``vf`` is an ffmpeg filter chain applied first."""
    frames = list(iter_frames(path, vf=vf, fps=fps, width=width, start_s=start_s, duration_s=duration_s,
                              select=select, bgr=bgr))
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def iter_frames(
    path: str | Path,
    *,
    vf: str = "",
    fps: Optional[float] = None,
    width: Optional[int] = None,
    start_s: float = 0.0,
    duration_s: Optional[float] = None,
    select: Optional[Sequence[int]] = None,
    bgr: bool = False,
) -> Iterator[np.ndarray]:
    """Like ``decode_frames`` but streaming, one [H, W, 3] frame at a time (for whole long videos)."""
    cmd = [_require("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error",
           *_frame_args(path, fps, width, start_s, duration_s, select, vf)]
    with tempfile.TemporaryFile() as err, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err) as proc:
        assert proc.stdout is not None
        try:
            while True:
                header = _read_ppm_header(proc.stdout, str(path))
                if header is None:
                    break
                w, h = header
                data = proc.stdout.read(w * h * 3)
                if len(data) != w * h * 3:
                    raise MediaError(f"{path}: ffmpeg's frame stream ended inside a frame")
                frame = np.frombuffer(data, np.uint8).reshape(h, w, 3)
                yield frame[..., ::-1] if bgr else frame
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            err.seek(0)
            raise MediaError(f"ffmpeg failed ({code}) decoding {path}: {_message(err.read())}")


def encode_frames(frames: Iterable[np.ndarray], out: str | Path, fps: float, args: Sequence[str] = ()) -> int:
    """Encode RGB uint8 frames [H, W, 3] (all one size), streamed through ffmpeg's stdin, as the video input
    ``0:v`` of an ffmpeg command whose remaining input and output options are ``args`` (ending in ``out``'s
    codec options; ``out`` is appended). Returns the number of frames sent."""
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise MediaError(f"no frames to encode into {out}")
    h, w, _ = first.shape
    cmd = [_require("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "pipe:0", *args, str(out)]
    count = 0
    with tempfile.TemporaryFile() as err, subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err) as proc:
        assert proc.stdin is not None
        try:
            for frame in itertools.chain([first], it):
                if frame.shape != first.shape or frame.dtype != np.uint8:
                    raise ValueError(f"frame {count} is {frame.dtype} {frame.shape}; all must be uint8 {first.shape}")
                proc.stdin.write(np.ascontiguousarray(frame).tobytes())
                count += 1
        except BrokenPipeError:
            pass  # ffmpeg stopped reading: its exit code and message below say why
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            code = proc.wait()
        if code != 0:
            err.seek(0)
            raise MediaError(f"ffmpeg failed ({code}) encoding {out}: {_message(err.read())}")
    return count


def _read_ppm_header(stream: IO[bytes], name: str) -> Optional[tuple[int, int]]:
    """Read "P6 <w> <h> 255<ws>" token by token; None at a clean end of stream."""
    tokens: list[bytes] = []
    token = b""
    while len(tokens) < 4:
        c = stream.read(1)
        if not c:
            if tokens or token:
                raise MediaError(f"{name}: ffmpeg's frame stream ended inside a frame header")
            return None
        if c.isspace():
            if token:
                tokens.append(token)
                token = b""
        else:
            token += c
    if tokens[0] != b"P6" or tokens[3] != b"255":
        raise MediaError(f"{name}: unexpected frame header {tokens!r} from ffmpeg")
    return int(tokens[1]), int(tokens[2])


def stored_frame_count(path: str | Path) -> int:
    """Frames listed in the container's index (mp4 has one; no decode, so only for files we just wrote)."""
    out = run_ffmpeg(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=nb_frames",
                      "-of", "json", str(path)], binary="ffprobe")
    streams = json.loads(out).get("streams", [])
    return int(streams[0].get("nb_frames", 0)) if streams else 0


def stream_lengths(path: str | Path) -> tuple[int, Optional[float]]:
    """(video frames in the container's index, audio duration in s or None) of a file we just wrote."""
    out = run_ffmpeg(["-v", "error", "-show_entries", "stream=codec_type,nb_frames,duration", "-of", "json",
                      str(path)], binary="ffprobe")
    streams = json.loads(out).get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), {})
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = float(audio["duration"]) if audio and audio.get("duration") not in (None, "N/A") else None
    return int(video.get("nb_frames", 0) or 0), duration


def count_frames(path: str | Path) -> int:
    """Number of video frames stored in ``path`` (decodes the stream, so truncation shows)."""
    out = run_ffmpeg(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                      "stream=nb_read_frames", "-of", "csv=p=0", str(path)], binary="ffprobe")
    return int(out.decode().strip().split(",")[0] or 0)


def decode_audio(path: str | Path, sample_rate: int, *, start_s: float = 0.0,
                 duration_s: Optional[float] = None) -> np.ndarray:
    """Mono float32 audio of ``path`` resampled to ``sample_rate`` (empty when the file has none)."""
    args = ["-ss", f"{start_s:.6f}"] if start_s > 0 else []
    args += ["-i", str(path)]
    if duration_s is not None:
        args += ["-t", f"{duration_s:.6f}"]
    raw = run_ffmpeg([*args, "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "pipe:1"])
    return np.frombuffer(raw, np.float32).copy()


def fit_length(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Trim or zero-pad ``audio`` to exactly ``num_samples`` (codec frames rarely end on the clip's edge)."""
    if len(audio) >= num_samples:
        return audio[:num_samples]
    return np.concatenate([audio, np.zeros(num_samples - len(audio), audio.dtype)])


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
    return (audio.mean(axis=1) if audio.ndim == 2 else audio), rate


def mean_volume_db(audio: np.ndarray) -> float:
    """RMS level in dBFS (what ffmpeg's volumedetect calls mean_volume); -inf for digital silence."""
    if audio.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(audio.astype(np.float64)))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")
