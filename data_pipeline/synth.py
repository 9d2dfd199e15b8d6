"""Synthetic media made with ffmpeg, espeak-ng and sox, for the tests and the benchmark (no downloads).

Each helper writes one small file and returns its path. Scenes are ffmpeg test sources that move (so the motion
filter passes them) unless ``static=True``; speech comes from espeak-ng, tones and noise from sox/ffmpeg.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import soundfile as sf

from data_pipeline.media import encode_frames, run_ffmpeg
from ovi.geometry import SAMPLE_RATE

# Moving sources different enough in hue, saturation and brightness that PySceneDetect's default threshold
# sees a hard cut between consecutive ones at any size.
SCENE_SOURCES = (
    "testsrc2=size={w}x{h}:rate={fps}",
    "testsrc2=size={w}x{h}:rate={fps},hflip,hue=s=0,negate",
    "testsrc2=size={w}x{h}:rate={fps},vflip,hue=h=90:s=3,eq=brightness=0.15",
    "testsrc2=size={w}x{h}:rate={fps},hflip,vflip,hue=s=0,eq=brightness=-0.2",
)


def speech_wav(path: Path, text: str, sample_rate: int = SAMPLE_RATE) -> Path:
    """An espeak-ng utterance resampled with sox to ``sample_rate`` mono."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        raise FileNotFoundError("espeak-ng and sox are needed to make speech; apt-get install espeak-ng sox")
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", str(sample_rate), "-c", "1", str(path)], check=True, capture_output=True)
    raw.unlink()
    return path


def make_video(
    path: Path,
    *,
    scenes: Sequence[float] = (6.0,),
    size: tuple[int, int] = (160, 96),
    fps: float = 30,
    audio: Optional[str] = "tone",
    speech_text: str = "hello there, this is a test of the data pipeline",
    static: bool = False,
    variable_fps: bool = False,
    faststart: bool = False,
) -> Path:
    """An h264 mp4 made of ``scenes`` (durations in s) with hard cuts between them.

    ``audio``: "tone" (a 440 Hz sine plus a little noise), "speech" (espeak-ng looped under the whole video),
    "silence" (digital zero) or None (no audio stream). ``variable_fps`` drops a varying share of frames so
    timestamps are irregular (avg_frame_rate != r_frame_rate). ``faststart`` puts the index first, so a
    truncated copy still opens (and fails only where the data ends).
    """
    w, h = size
    total = float(sum(scenes))
    inputs: list[str] = []
    for i, dur in enumerate(scenes):
        src = SCENE_SOURCES[i % len(SCENE_SOURCES)].format(w=w, h=h, fps=fps)
        if static:
            src = f"color=c=0x3366aa:size={w}x{h}:rate={fps}"
        inputs += ["-f", "lavfi", "-t", f"{dur}", "-i", src]
    n = len(scenes)
    vchain = "".join(f"[{i}:v]" for i in range(n)) + f"concat=n={n}:v=1:a=0"
    if variable_fps:
        # Keep 2 of 3 frames in the first half and every frame after: irregular gaps between timestamps.
        vchain += ",select='if(lt(t\\," + f"{total / 2}" + "),not(eq(mod(n\\,3)\\,2)),1)'"
    vchain += "[v]"
    maps = ["-map", "[v]"]
    audio_args: list[str] = []
    if audio is not None:
        a_idx = n
        if audio == "tone":
            inputs += ["-f", "lavfi", "-t", f"{total}", "-i", "sine=frequency=440:sample_rate=44100"]
        elif audio == "silence":
            inputs += ["-f", "lavfi", "-t", f"{total}", "-i", "anullsrc=r=44100:cl=mono"]
        elif audio == "speech":
            wav = speech_wav(path.with_suffix(".speech.wav"), speech_text)
            inputs += ["-stream_loop", "-1", "-i", str(wav)]
        else:
            raise ValueError(f"audio must be 'tone', 'speech', 'silence' or None, got {audio!r}")
        maps += ["-map", f"{a_idx}:a"]
        audio_args = ["-c:a", "aac", "-b:a", "96k", "-t", f"{total}"]
    fps_mode = ["-fps_mode", "vfr"] if variable_fps else []
    if faststart:
        fps_mode += ["-movflags", "+faststart"]
    run_ffmpeg(["-y", *inputs, "-filter_complex", vchain, *maps, *fps_mode, "-c:v", "libx264", "-preset",
                "ultrafast", "-pix_fmt", "yuv420p", *audio_args, str(path)])
    wav_tmp = path.with_suffix(".speech.wav")
    if wav_tmp.exists():
        wav_tmp.unlink()
    return path


def make_audio(path: Path, *, duration_s: float = 8.0, kind: str = "speech",
               speech_text: str = "the quick brown fox jumps over the lazy dog") -> Path:
    """An audio-only file: "speech" (espeak-ng, looped with pauses) or "tone"."""
    if kind == "speech":
        wav = speech_wav(path.with_suffix(".speech.wav"), speech_text)
        run_ffmpeg(["-y", "-stream_loop", "-1", "-i", str(wav), "-af", "apad=pad_dur=0.5", "-t",
                    f"{duration_s}", "-ar", str(SAMPLE_RATE), "-ac", "1", str(path)])
        wav.unlink()
    elif kind == "tone":
        run_ffmpeg(["-y", "-f", "lavfi", "-t", f"{duration_s}", "-i", f"sine=frequency=330:sample_rate={SAMPLE_RATE}",
                    str(path)])
    else:
        raise ValueError(f"kind must be 'speech' or 'tone', got {kind!r}")
    return path


def truncate(path: Path, keep_fraction: float) -> Path:
    """Cut the file's bytes short, as an interrupted download would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


# Settings for the tiny synthetic videos above (tests, benchmark): the paper's 720x720 floor would reject them,
# and the weight-needing quality filters are switched off explicitly (no weights are downloaded here).
TINY_OVERRIDES = (
    "sync.enabled=false",
    "filter.aesthetic.enabled=false",
    "filter.face.enabled=false",
    "filter.min_width=64",
    "filter.min_height=64",
    "pack.target_area_side=128",
    "split.preset=ultrafast",
    "pack.preset=ultrafast",
)


def make_talking_head(path: Path, *, size: tuple[int, int] = (256, 256), seconds: float = 5.5, fps: int = 24,
                      speech_text: str = "good evening, here is the news of the day from our studio") -> Path:
    """A fixed-camera talking head: a still, textured studio background with a little sensor noise, a face
    that barely moves (a 1 px sway), blinking eyes and a mouth that opens with the loudness of the espeak-ng
    speech on the audio track. The kind of clip a whole-frame motion mean calls static."""
    w, h = size
    wav = speech_wav(path.with_suffix(".speech.wav"), speech_text)
    audio, rate = sf.read(str(wav), dtype="float32")
    wav.unlink()
    n = round(seconds * fps)
    audio = np.resize(audio, round(seconds * rate))  # loop the utterance under the whole clip
    hop = rate / fps
    loud = np.array([np.sqrt(np.mean(audio[int(i * hop): int((i + 1) * hop)] ** 2)) for i in range(n)])
    opening = np.clip(loud / (loud.max() + 1e-9), 0, 1)  # 0 closed .. 1 wide open
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    background = (90 + 40 * np.sin(xx / 7.0) * np.cos(yy / 11.0))[..., None] * np.array([0.8, 0.9, 1.0])
    frames = []
    for i in range(n):
        cx, cy = w / 2 + np.sin(i / fps * 2 * np.pi * 0.3), h * 0.48
        img = background.copy()
        face = ((xx - cx) / (0.17 * w)) ** 2 + ((yy - cy) / (0.24 * h)) ** 2 <= 1
        img[face] = (205, 160, 130)
        blink = i % (fps * 3) < 3
        for ex in (-0.06, 0.06):
            eye = ((xx - cx - ex * w) / (0.025 * w)) ** 2 + ((yy - cy + 0.06 * h) / (0.012 * h if blink else
                                                                                       0.022 * h)) ** 2 <= 1
            img[eye] = (30, 30, 40)
        mouth = ((xx - cx) / (0.06 * w)) ** 2 + ((yy - cy - 0.11 * h) / (0.006 * h + 0.045 * h * opening[i])) ** 2 <= 1
        img[mouth] = (90, 20, 30)
        img += rng.normal(0, 2.0, img.shape)  # sensor noise
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    tmp_wav = path.with_suffix(".audio.wav")
    sf.write(str(tmp_wav), audio, rate)
    try:
        encode_frames(frames, path, fps, ["-i", str(tmp_wav), "-map", "0:v", "-map", "1:a", "-c:v", "libx264",
                                          "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"])
    finally:
        tmp_wav.unlink(missing_ok=True)
    return path
