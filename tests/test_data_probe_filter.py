"""Probe and filter: broken and unusable inputs are rejected with the right reason, as configured."""
from __future__ import annotations

from pathlib import Path

import pytest

from data_pipeline import media, synth
from data_pipeline.config import load_data_config
from data_pipeline.stages import build_stage
from helpers import run_stages

SIZE = (96, 64)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("filter_media")
    synth.make_video(d / "good.mp4", scenes=(5.5,), size=SIZE)
    synth.make_video(d / "static.mp4", scenes=(5.5,), size=SIZE, static=True)
    synth.make_video(d / "silent.mp4", scenes=(5.5,), size=SIZE, audio="silence")
    synth.make_video(d / "noaudio.mp4", scenes=(5.5,), size=SIZE, audio=None)
    synth.make_video(d / "lowres.mp4", scenes=(5.5,), size=(48, 32))
    synth.truncate(synth.make_video(d / "truncated.mp4", scenes=(11.0,), size=SIZE), 0.6)  # index at the end
    synth.truncate(synth.make_video(d / "truncated_fs.mp4", scenes=(11.0,), size=SIZE, faststart=True), 0.6)
    synth.make_audio(d / "speech.wav", duration_s=3.0)
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("not a video at all\n")
    return d


def cfg_for(media_dir: Path, out: Path, *overrides: str):
    return load_data_config(None, [f"input={media_dir}", f"output={out}", *synth.TINY_OVERRIDES, *overrides])


@pytest.mark.parametrize("name, reason", [
    ("empty.mp4", "empty_file"),
    ("notes.mp4", "unreadable"),
    ("truncated.mp4", "unreadable"),  # the mp4 index was at the cut-off end
    ("speech.wav", "no_video_stream"),
    ("noaudio.mp4", "no_audio_stream"),
])
def test_probe_rejects_with_reason(media_dir, tmp_path, name, reason):
    out = build_stage("probe", cfg_for(media_dir, tmp_path)).run({"id": "x", "source": name})
    assert len(out) == 1 and out[0]["status"] == "rejected" and out[0]["reason"] == reason, out


def test_missing_audio_as_silence_then_volume_policy(media_dir, tmp_path):
    cfg = cfg_for(media_dir, tmp_path, "probe.on_missing_audio=silence")
    out = run_stages(cfg, ["probe", "split", "filter"], {"id": "na", "source": "noaudio.mp4"})
    assert [(r["status"], r["reason"]) for r in out] == [("rejected", "silent")]
    audio, _ = media.read_wav(tmp_path / out[0]["audio"])
    assert len(audio) == out[0]["num_samples"] and not audio.any()
    # With the volume floor disabled, a video without sound goes on (e.g. for a video-only corpus).
    cfg = cfg_for(media_dir, tmp_path / "b", "probe.on_missing_audio=silence", "filter.min_mean_volume_db=null")
    out = run_stages(cfg, ["probe", "split", "filter"], {"id": "na", "source": "noaudio.mp4"})
    assert [r["status"] for r in out] == ["ok"] and out[0]["scores"]["mean_volume_db"] is None


def test_truncated_file_as_configured(media_dir, tmp_path):
    rec = {"id": "tr", "source": "truncated_fs.mp4"}
    # verify_decode: the whole file is decoded up front and the damage found.
    out = run_stages(cfg_for(media_dir, tmp_path / "v", "probe.verify_decode=true"), ["probe"], rec)
    assert out[0]["status"] == "rejected" and out[0]["reason"] == "decode_error"
    # Without it the readable part is used: clips come only from frames that decode, all of full length.
    cfg = cfg_for(media_dir, tmp_path / "n")
    probed = run_stages(cfg, ["probe"], rec)
    assert probed[0]["status"] == "ok" and probed[0]["duration_s"] == pytest.approx(11.0, abs=0.1)
    clips = run_stages(cfg, ["split"], probed[0])
    assert len(clips) == 1 and clips[0]["status"] == "ok"  # 11 s would give 2 clips; ~6.6 s decodes
    assert media.count_frames(tmp_path / "n" / clips[0]["video"]) == 121


@pytest.mark.parametrize("name, reason", [
    ("lowres.mp4", "low_resolution"),
    ("static.mp4", "static"),
    ("silent.mp4", "silent"),
    ("good.mp4", None),
])
def test_filter_reasons(media_dir, tmp_path, name, reason):
    cfg = cfg_for(media_dir, tmp_path, "filter.min_width=64", "filter.min_height=48")
    out = run_stages(cfg, ["probe", "split", "filter"], {"id": "c", "source": name})
    assert len(out) == 1
    assert (out[0]["status"], out[0]["reason"]) == (("ok", None) if reason is None else ("rejected", reason))
    if name == "lowres.mp4":  # turned away by probe, before split spends an encode on it
        assert "video" not in out[0] and out[0]["width"] == 48
        return
    scores = out[0]["scores"]
    if name == "good.mp4":
        assert scores["motion"] > cfg.filter.motion.min_score and scores["mean_volume_db"] > -30
    if name == "static.mp4":
        assert scores["motion"] < cfg.filter.motion.min_score and scores["mean_volume_db"] > -30
    if name == "silent.mp4":
        assert scores["mean_volume_db"] is None  # digital silence: -inf dB, stored as null


def test_volume_threshold_is_the_configured_one(media_dir, tmp_path):
    # The tone sits near -21 dBFS: a -10 dB floor rejects it, the paper's -60 dB keeps it.
    cfg = cfg_for(media_dir, tmp_path, "filter.min_mean_volume_db=-10")
    out = run_stages(cfg, ["probe", "split", "filter"], {"id": "g", "source": "good.mp4"})
    assert out[0]["reason"] == "silent" and -25 < out[0]["scores"]["mean_volume_db"] < -15


def test_a_truncated_file_without_a_full_clip_says_so(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    synth.truncate(synth.make_video(src / "cut.mp4", scenes=(11.0,), size=SIZE, faststart=True), 0.3)
    out = run_stages(cfg_for(src, tmp_path / "out"), ["probe", "split"], {"id": "t", "source": "cut.mp4"})
    assert [(r["status"], r["reason"]) for r in out] == [("rejected", "truncated")], out


def test_motion_filter_keeps_fixed_camera_talking_heads(tmp_path):
    """Calibration: a talking head and the toy world's face scenes pass the paper's 0.1 floor on their busiest
    region; a still shot with sensor noise does not; the whole-frame mean would call the talking head static."""
    from ovi.toy import cli as toy_cli

    src = tmp_path / "in"
    src.mkdir()
    synth.make_talking_head(src / "talk.mp4")
    toy_cli.main(["make", "--out", str(src), "--num", "3", "--seed", "0", "--size", "128", "--kinds", "face"])
    media.run_ffmpeg(["-y", "-i", str(src / "talk.mp4"), "-vf", "select=eq(n\\,0),loop=140:1:0", "-t", "5.5",
                      "-map", "0:v", "-map", "0:a", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "copy",
                      str(src / "still.mp4")])  # one frame of the same clip held: nothing moves
    cfg = cfg_for(src, tmp_path / "out")
    faces = sorted(p.name for p in src.glob("toy_*_face.mp4"))
    assert faces
    scores = {}
    for name in ["talk.mp4", "still.mp4", *faces]:
        (out,) = run_stages(cfg, ["probe", "split", "filter"], {"id": name.split(".")[0], "source": name})
        scores[name] = out["scores"]["motion"]
        assert (out["status"] == "ok") == (name != "still.mp4"), (name, out["reason"], scores[name])
    assert scores["still.mp4"] < 0.02 and min(scores[n] for n in ["talk.mp4", *faces]) > 0.12
    (whole,) = run_stages(cfg_for(src, tmp_path / "mean", "filter.motion.regions=1"), ["probe", "split", "filter"],
                          {"id": "talk", "source": "talk.mp4"})
    assert whole["reason"] == "static" and whole["scores"]["motion"] < 0.05
