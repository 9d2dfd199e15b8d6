"""Split stage: cuts found and respected, 24 fps / 121 frames / 16 kHz from any frame rate."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_pipeline import media, synth
from data_pipeline.config import load_data_config
from helpers import run_stages
from data_pipeline.stages.split import clip_windows, detect_cuts

FPS, FRAMES, RATE = 24, 121, 16_000
CLIP_SAMPLES = round(FRAMES / FPS * RATE)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("split_media")
    synth.make_video(d / "cut.mp4", scenes=(5.5, 5.5), fps=30, size=(96, 64))
    synth.make_video(d / "vfr.mp4", scenes=(6.0,), fps=30, size=(96, 64), variable_fps=True)
    synth.make_video(d / "pal.mp4", scenes=(5.5,), fps=25, size=(96, 64))
    return d


def make_cfg(media_dir: Path, out: Path, *extra: str):
    return load_data_config(None, [f"input={media_dir}", f"output={out}", *synth.TINY_OVERRIDES, *extra])


def test_clip_windows_respect_cuts_and_margins():
    # scenes [0,130) [130,400) [400,450): margins of 2 frames only at real cuts, not at the file's ends
    windows = clip_windows([130, 400], 450, clip_frames=121, margin=2, max_per_scene=0)
    assert windows == [(0, 0, 0), (1, 0, 132), (1, 1, 253)]  # 253 + 121 = 374 <= 398
    for scene, _, start in windows:
        lo, hi = [0, 130, 400, 450][scene], [0, 130, 400, 450][scene + 1]
        assert start >= lo and start + 121 <= hi
    assert clip_windows([], 121, 121, 2, 0) == [(0, 0, 0)]  # exactly one clip long, no cut: fits
    assert clip_windows([60], 300, 121, 2, 0) == [(1, 0, 62)]
    assert len(clip_windows([], 1000, 121, 2, max_per_scene=3)) == 3


def test_hard_cut_splits_at_the_cut(media_dir, tmp_path):
    cuts, total = detect_cuts(media_dir / "cut.mp4", FPS, 64, 27.0, 15)
    assert total == round(11.0 * FPS)
    assert len(cuts) == 1 and abs(cuts[0] - round(5.5 * FPS)) <= 1

    cfg = make_cfg(media_dir, tmp_path)
    clips = run_stages(cfg, ["probe", "split"], {"id": "cut", "source": "cut.mp4"})
    assert [c["status"] for c in clips] == ["ok", "ok"]
    assert [c["scene_index"] for c in clips] == [0, 1]
    assert clips[0]["end_s"] <= 5.5 and clips[1]["start_s"] >= 5.5
    # No clip straddles the cut: the biggest frame-to-frame change inside a clip is far below the cut's.
    whole = media.decode_frames(media_dir / "cut.mp4", fps=FPS).astype(np.int16)
    cut_jump = np.abs(whole[cuts[0]] - whole[cuts[0] - 1]).mean()
    for c in clips:
        frames = media.decode_frames(tmp_path / c["video"]).astype(np.int16)
        inner = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3)).max()
        assert inner < cut_jump / 3, (c["id"], inner, cut_jump)


@pytest.mark.parametrize("name", ["cut.mp4", "vfr.mp4", "pal.mp4"])
def test_any_frame_rate_gives_121_frames_at_24fps(media_dir, tmp_path, name):
    cfg = make_cfg(media_dir, tmp_path)
    probed = run_stages(cfg, ["probe"], {"id": "src", "source": name})[0]
    if name == "vfr.mp4":
        assert probed["variable_fps"], "the synthetic VFR input should probe as variable frame rate"
    clips = run_stages(cfg, ["split"], probed)
    assert clips and all(c["status"] == "ok" for c in clips)
    for c in clips:
        video = tmp_path / c["video"]
        assert media.count_frames(video) == FRAMES  # decoded, not just the container's claim
        info = media.probe(video)
        assert info.fps == pytest.approx(FPS) and not info.variable_fps and not info.has_audio
        audio, rate = media.read_wav(tmp_path / c["audio"])
        assert rate == RATE and audio.ndim == 1 and len(audio) == CLIP_SAMPLES == c["num_samples"]
        assert media.mean_volume_db(audio) > -40  # the tone is really there, not padding
        assert c["num_frames"] == FRAMES and c["fps"] == FPS
        assert "." not in c["id"]


def test_audio_is_aligned_with_the_clip_start(tmp_path):
    # A tone that starts at 6.0 s must start (6.0 - start_s) s into the second clip's audio.
    src = tmp_path / "in"
    src.mkdir()
    media.run_ffmpeg(["-y", "-f", "lavfi", "-t", "11", "-i", "testsrc2=size=64x64:rate=30", "-f", "lavfi", "-t",
                      "11", "-i", "aevalsrc='if(lt(t,6),0,0.5*sin(2*PI*440*t))':s=16000", "-map", "0:v", "-map", "1:a",
                      "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(src / "late.mp4")])
    cfg = make_cfg(src, tmp_path / "out")
    clips = run_stages(cfg, ["probe", "split"], {"id": "late", "source": "late.mp4"})
    second = next(c for c in clips if c["clip_index"] == 1)  # starts at 121/24 = 5.04 s
    audio, rate = media.read_wav(tmp_path / "out" / second["audio"])
    expected = (6.0 - second["start_s"]) * rate
    found = int(np.flatnonzero(np.abs(audio) > 0.01)[0])
    assert abs(found - expected) < 0.01 * rate, (found, expected)  # within 10 ms (a quarter frame)


def test_late_starting_audio_stays_in_sync(tmp_path):
    """Regression: a source whose audio stream starts 58 ms after its video had the first clip's audio shifted
    early (a wav has no timestamps). Clicks at source times k + 0.5 s must land there in the clip, to 1 ms."""
    src = tmp_path / "in"
    src.mkdir()
    click = "aevalsrc='0.8*gte(mod(t+0.058\\,1)\\,0.5)*lt(mod(t+0.058\\,1)\\,0.505)':s=16000"  # audio-stream time
    media.run_ffmpeg(["-y", "-f", "lavfi", "-t", "11", "-i", "testsrc2=size=64x64:rate=24", "-f", "lavfi", "-t",
                      "11", "-i", click, "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast",
                      "-c:a", "pcm_s16le", str(tmp_path / "even.mkv")])
    # Remux with the audio stream starting at 58 ms (its first packet is late, as in camera files).
    media.run_ffmpeg(["-y", "-i", str(tmp_path / "even.mkv"), "-itsoffset", "0.058", "-i", str(tmp_path / "even.mkv"),
                      "-map", "0:v", "-map", "1:a", "-c", "copy", str(src / "late.mkv")])
    cfg = make_cfg(src, tmp_path / "out")
    clips = run_stages(cfg, ["probe", "split"], {"id": "late", "source": "late.mkv"})
    assert [c["status"] for c in clips] == ["ok", "ok"]
    for clip in clips:
        audio, rate = media.read_wav(tmp_path / "out" / clip["audio"])
        onsets = np.flatnonzero((np.abs(audio[1:]) > 0.4) & (np.abs(audio[:-1]) <= 0.4)) + 1
        source_times = clip["start_s"] + onsets / rate
        expected = np.floor(source_times) + 0.5
        assert len(onsets) >= 4 and np.abs(source_times - expected).max() < 0.001, (clip["id"], source_times)


def test_odd_sized_source_is_cut(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    media.run_ffmpeg(["-y", "-f", "lavfi", "-t", "5.3", "-i", "testsrc2=size=97x65:rate=24", "-f", "lavfi", "-t",
                      "5.3", "-i", "sine=frequency=300:sample_rate=16000", "-c:v", "libx264", "-preset", "ultrafast",
                      "-pix_fmt", "yuv444p", "-c:a", "aac", str(src / "odd.mp4")])
    cfg = make_cfg(src, tmp_path / "out")
    (clip,) = run_stages(cfg, ["probe", "split"], {"id": "odd", "source": "odd.mp4"})
    assert clip["status"] == "ok", clip
    assert clip["crop"] == [0, 0, 96, 64]  # cropped by a pixel to even sides
    assert media.decode_frames(tmp_path / "out" / clip["video"]).shape == (FRAMES, clip["height"], clip["width"], 3)
    source_size = run_stages(make_cfg(src, tmp_path / "src", "split.final_size=false"), ["probe", "split"],
                             {"id": "odd", "source": "odd.mp4"})[0]
    assert media.decode_frames(tmp_path / "src" / source_size["video"]).shape == (FRAMES, 64, 96, 3)
