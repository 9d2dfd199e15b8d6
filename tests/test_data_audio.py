"""The audio-only path (stage-1 data): up-to-12-s pretraining clips cut in quiet spots, exact 5.04-s
fine-tuning clips, transcription + audio description captions, wav+json shards."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from data_pipeline import synth
from data_pipeline.captioning.format import caption_error
from data_pipeline.config import AudioSplitConfig, load_data_config
from data_pipeline.fake_caption_server import FakeCaptionServer
from data_pipeline.runner import run_pipeline
from data_pipeline.shards import read_index, shard_urls
from data_pipeline.stages.audio_split import fixed_segments, quiet_cut_segments

RATE = 16_000


def test_pretrain_cuts_fall_in_the_quiet_parts():
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(30 * RATE) * 0.3).astype(np.float32)
    gaps = [(9.0, 9.4), (19.5, 19.9)]  # silences the cutter should find (each within 2..12 s of the last cut)
    for a, b in gaps:
        audio[int(a * RATE): int(b * RATE)] = 0.0
    segments = quiet_cut_segments(audio, AudioSplitConfig())
    assert segments[0][0] == 0 and all(s[1] == t[0] for s, t in zip(segments, segments[1:]))
    assert all(2 * RATE <= b - a <= 12 * RATE for a, b in segments)
    for (a, b), (_, end) in zip(gaps, segments):
        assert a * RATE <= end <= b * RATE
    assert segments[-1][1] == len(audio)  # the 10.1-s tail is a clip of its own


def test_finetune_clips_are_exactly_5_04_s():
    segments = fixed_segments(20 * RATE, round(5.04 * RATE))
    assert segments == [(0, 80_640), (80_640, 161_280), (161_280, 241_920)]


@pytest.fixture(scope="module")
def audio_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio_in")
    synth.make_audio(d / "talk.wav", duration_s=14.0)
    synth.make_video(d / "clip.mp4", scenes=(6.0,), size=(64, 64), audio="speech")  # audio taken from a video
    synth.make_audio(d / "short.wav", duration_s=1.0, kind="tone")
    return d


@pytest.mark.parametrize("purpose", ["pretrain", "finetune"])
def test_audio_pipeline_shards(audio_inputs, tmp_path, purpose):
    with FakeCaptionServer() as server:
        cfg = load_data_config("configs/data/audio.yaml", [
            f"input={audio_inputs}", f"output={tmp_path}", "engine.workers=1", f"caption.base_url={server.base_url}",
            f"audio_split.purpose={purpose}"])
        summary = run_pipeline(cfg)
        assert all("image_url" not in json.dumps(r) for r in server.requests)  # audio only: no frames sent
    assert summary["stages"]["audio_split"]["rejected"] == {"too_short": 1}
    index = read_index(tmp_path / "shards")
    assert index.kind == "audio"
    samples = list(wds.WebDataset(shard_urls(tmp_path / "shards"), shardshuffle=False))
    assert len(samples) == index.num_samples >= 3
    for s in samples:
        assert set(k for k in s if not k.startswith("__")) == {"wav", "json"}
        meta = json.loads(s["json"])
        audio, rate = sf.read(io.BytesIO(s["wav"]))
        assert rate == RATE and audio.ndim == 1 and len(audio) == meta["num_samples"]
        assert meta["duration_s"] == pytest.approx(len(audio) / RATE, abs=1e-6)
        assert caption_error(meta["caption"], require_visual=False) is None and "<S>" in meta["caption"]
        if purpose == "finetune":
            assert len(audio) == 80_640
        else:
            assert 2.0 <= meta["duration_s"] <= 12.0


def test_pretrain_clips_cut_at_the_latest_pause_not_the_first():
    """Regression: with two pauses in range, the cutter took the first (a 2.0 s clip, then 10.07 s)."""
    audio = (np.random.default_rng(1).standard_normal(int(14.0 * RATE)) * 0.3).astype(np.float32)
    for a, b in [(2.0, 2.3), (10.0, 10.3)]:
        audio[int(a * RATE): int(b * RATE)] = 0.0
    segments = quiet_cut_segments(audio, AudioSplitConfig())
    assert 10.0 * RATE <= segments[0][1] <= 10.3 * RATE, segments
