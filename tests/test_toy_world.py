"""The toy world: its ground truth is what a detector finds in its own written clips; the sync metric gives
the ceiling on real clips and chance on shuffled audio; captions validate; the CLI resumes; the sidecar
caption backend feeds the data pipeline."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import webdataset as wds

from data_pipeline.captioning.format import caption_error
from data_pipeline.config import load_data_config
from data_pipeline.runner import run_pipeline
from data_pipeline.shards import shard_urls
from data_pipeline.stages import build_stage
from ovi.media import read_audio, read_video
from ovi.prompts import parse_prompt
from ovi.toy import cli
from ovi.toy.clip import FPS, NUM_FRAMES, NUM_SAMPLES, SAMPLE_RATE
from ovi.toy.metrics import score_clip, shuffled_pairs, summarise
from ovi.toy.sidecar import is_ground_truth, read_sidecar, read_truth, sidecar_path
from ovi.toy.world import EVENT_KINDS, KINDS, make_clip

FRAME_S = 1.0 / FPS
CLIPS_PER_KIND = 3


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Clips written by the CLI (3 of each kind), decoded back from the mp4s, with their sidecars."""
    out = tmp_path_factory.mktemp("toy")
    assert cli.main(["make", "--out", str(out), "--num", str(CLIPS_PER_KIND * len(KINDS)), "--seed", "5"]) == 0
    clips = []
    for video in sorted(out.glob("*.mp4")):
        frames, fps = read_video(video)
        clips.append({"video": video, "frames": frames, "fps": fps, "audio": read_audio(video, SAMPLE_RATE),
                      "truth": read_sidecar(video)})
    return out, clips


@pytest.fixture(scope="module")
def scores(made):
    return [score_clip(c["frames"], c["audio"], c["fps"], SAMPLE_RATE, c["truth"]) for c in made[1]]


def test_written_clips_have_the_training_geometry(made):
    _, clips = made
    assert len(clips) == CLIPS_PER_KIND * len(KINDS)
    for c in clips:
        assert c["frames"].shape == (NUM_FRAMES, 64, 64, 3) and c["fps"] == FPS
        # The container keeps the track length to about a millisecond (mp4 duration rounding).
        assert abs(len(c["audio"]) - NUM_SAMPLES) <= SAMPLE_RATE // 1000
        assert c["truth"]["kind"] in KINDS and c["truth"]["num_samples"] == NUM_SAMPLES


def test_event_ground_truth_is_what_detection_finds(made, scores):
    for c, s in zip(made[1], scores):
        t = c["truth"]
        if t["kind"] not in EVENT_KINDS:
            continue
        assert t["events"], "event scenes must have events"
        gaps = np.diff([e["time_s"] for e in t["events"]])
        assert gaps.min() >= 0.15 - 1e-9  # events far enough apart for the metric
        assert s.truth["visual_recall"] == 1.0 and s.truth["audio_recall"] >= 0.95, (t["id"], s.truth)
        assert len(s.visual_events_s) == len(t["events"])  # nothing extra seen
        assert s.share_matched >= 0.95 and abs(s.median_offset_ms) < 15 and s.median_abs_offset_ms < 15, s
        for e in t["events"]:  # frame, sample and time agree
            assert e["sample"] == round(e["frame"] * SAMPLE_RATE / FPS) and e["time_s"] == e["sample"] / SAMPLE_RATE


def test_face_mouth_follows_speech_loudness(made, scores):
    faces = [(c, s) for c, s in zip(made[1], scores) if c["truth"]["kind"] == "face"]
    assert len(faces) == CLIPS_PER_KIND
    for c, s in faces:
        assert s.mouth_corr >= 0.8, s.mouth_corr
        assert s.truth["mouth_truth_corr"] >= 0.95  # the pixels show the stored curve
        assert parse_prompt(c["truth"]["caption"]).speech == [c["truth"]["sentence"]]


def test_ambient_scenes_have_no_events(made, scores):
    ambient = [s for c, s in zip(made[1], scores) if c["truth"]["kind"] == "ambient"]
    assert len(ambient) == CLIPS_PER_KIND
    for s in ambient:
        assert s.visual_events_s == [] and len(s.onsets_s) <= 1 and math.isnan(s.share_matched)


def test_adherence_recovers_kind_count_and_colours(scores):
    for s in scores:
        assert s.truth["kind_ok"] and s.truth["count_ok"] and s.truth["colours_ok"], (s.kind, s.colours, s.truth)


def test_shuffled_audio_scores_at_chance(made, scores):
    clips = made[1]
    partner = shuffled_pairs([c["truth"]["kind"] for c in clips])
    assert all(p != i and clips[p]["truth"]["kind"] == clips[i]["truth"]["kind"] for i, p in enumerate(partner))
    shuffled = [score_clip(c["frames"], clips[p]["audio"], c["fps"], SAMPLE_RATE) for c, p in zip(clips, partner)]
    real, chance = summarise(scores), summarise(shuffled)
    assert real["share_matched"] >= 0.95 and chance["share_matched"] <= 0.5 * real["share_matched"], (real, chance)
    assert real["mouth_corr"] >= 0.8 and chance["mouth_corr"] <= 0.5, (real, chance)


def test_captions_validate_and_vary():
    for kind in KINDS:
        captions = [make_clip(kind, [9, i]).truth["caption"] for i in range(6)]
        for text in captions:
            assert caption_error(text) is None, text
        assert len(set(captions)) == len(captions)
    bounce = make_clip("bounce", [9, 0]).truth
    assert all(o["colour"] in bounce["caption"] for o in bounce["objects"])


def test_world_is_deterministic_from_the_seed():
    a, b, c = make_clip("bounce", [1, 2]), make_clip("bounce", [1, 2]), make_clip("bounce", [1, 3])
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio) and a.truth == b.truth
    assert not np.array_equal(a.frames, c.frames)
    with pytest.raises(ValueError, match="choose from"):
        make_clip("rainbow", 0)


def test_cli_makes_and_resumes(tmp_path, capsys):
    assert cli.main(["make", "--out", str(tmp_path), "--num", "2", "--seed", "1", "--kinds", "bounce,ambient"]) == 0
    first = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert sorted(first) == ["toy_00000_bounce.json", "toy_00000_bounce.mp4",
                             "toy_00001_ambient.json", "toy_00001_ambient.mp4"]
    sidecar_path(tmp_path / "toy_00001_ambient.mp4").unlink()  # an interrupted clip: mp4 without sidecar
    capsys.readouterr()
    assert cli.main(["make", "--out", str(tmp_path), "--num", "3", "--seed", "1", "--kinds", "bounce,ambient"]) == 0
    assert "made 2 clips, skipped 1" in capsys.readouterr().out
    assert (tmp_path / "toy_00000_bounce.mp4").stat().st_mtime_ns == first["toy_00000_bounce.mp4"]
    assert (tmp_path / "toy_00002_bounce.json").exists()
    report = tmp_path / "report.json"
    assert cli.main(["score", str(tmp_path), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["summary"]["kind_ok"] == 1.0


def test_score_reads_a_folder_of_ovi_generate_outputs(tmp_path):
    """ovi-generate writes its own record as {stem}.json: scored from the media alone, not read as ground truth."""
    assert cli.main(["make", "--out", str(tmp_path), "--num", "1", "--seed", "1", "--kinds", "bounce"]) == 0
    clip = tmp_path / "toy_00000_bounce.mp4"
    assert is_ground_truth(read_sidecar(clip))
    sidecar_path(clip).write_text(json.dumps({"prompt": "Two red balls bounce.", "seed": 103, "settings": {}}))
    assert read_truth(clip) is None
    report = tmp_path / "report.json"
    assert cli.main(["score", str(tmp_path), "--json", str(report)]) == 0
    row = json.loads(report.read_text())["rows"][0]
    assert row["kind"] == "bounce" and row["truth"] == {} and row["share_matched"] > 0.8


def _pipeline_cfg(src, out, *extra):
    return load_data_config("configs/data/toy.yaml", [f"input={src}", f"output={out}", "engine.workers=1", *extra])


def test_sidecar_backend_captions_through_the_caption_stage(tmp_path):
    src = tmp_path / "in"
    cli.main(["make", "--out", str(src), "--num", "2", "--seed", "3", "--kinds", "face,flash"])
    sidecar_path(src / "toy_00001_flash.mp4").unlink()  # a source without a sidecar
    cfg = _pipeline_cfg(src, tmp_path / "out")
    caption = build_stage("caption", cfg)
    caption.setup()
    results = {}
    for video in sorted(src.glob("*.mp4")):
        record = {"id": video.stem, "source": video.name}
        for name in ("probe", "split"):
            record = build_stage(name, cfg).run(record)[0]
        assert record["status"] == "ok", record
        results[video.stem] = caption.run(record)[0]
    face = results["toy_00000_face"]
    assert face["status"] == "ok" and face["caption"] == read_sidecar(src / "toy_00000_face.mp4")["caption"]
    flash = results["toy_00001_flash"]
    assert flash["status"] == "rejected" and flash["reason"] == "caption_refused" and "no sidecar" in flash["detail"]


def test_toy_clips_become_shards_with_their_captions(tmp_path):
    src = tmp_path / "in"
    cli.main(["make", "--out", str(src), "--num", "4", "--seed", "2"])
    run_pipeline(_pipeline_cfg(src, tmp_path / "out"))
    samples = list(wds.WebDataset(shard_urls(tmp_path / "out"), shardshuffle=False))
    assert len(samples) == 4
    captions = {read_sidecar(v)["caption"] for v in src.glob("*.mp4")}
    assert {json.loads(s["json"])["caption"] for s in samples} == captions
