"""Synthetic media made with ffmpeg, espeak-ng and sox, for the tests and the benchmark (no downloads).

Each helper writes one small file and returns its path. Scenes are ffmpeg test sources that move (so the motion
filter passes them) unless ``static=True``; speech comes from espeak-ng, tones and noise from sox/ffmpeg.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Optional, Sequence

from data_pipeline.media import run_ffmpeg
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
