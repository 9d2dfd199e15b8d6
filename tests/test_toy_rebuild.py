"""The toy recipe end to end with the real tools (``ovi-toy rebuild --quick``): world -> ovi-data shards ->
codecs -> precompute -> stage 1 (pretrain, finetune) -> stage 2 -> stage 3 (the second pass's V2A-tuned audio
tower) -> a release folder that the generation pipeline loads and samples as the toy preset does (joint pass,
then the sound again from the video on the stage-3 weights); a second run resumes by skipping every finished
phase."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from ovi.checkpoints import TrainingMetadata
from ovi.toy import cli
from ovi.toy.evaluate import toy_config
from ovi.toy.rebuild import QUICK

RELEASE_FILES = ("fusion.safetensors", "video_codec.json", "audio_codec.json", "text_encoder/config.json",
                 "tokenizer/tokenizer.json", "griffin_lim.json", "v2a.safetensors")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_quick_rebuild_makes_a_release_the_pipeline_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "toy"
    assert cli.main(["rebuild", "--quick", "--out", str(out), "--fusion-steps", "3"]) == 0
    assert (out / "fusion/checkpoints/step_000003").is_dir()  # --fusion-steps reached stage 2's trainer
    release = out / "release" / "fusion"
    for name in RELEASE_FILES:
        assert (release / name).is_file(), name
    meta = TrainingMetadata.read(release / "fusion.safetensors")
    assert meta.stage == "fusion" and meta.num_frames == 121
    # Stage 2 started from the stage-1 audio tower: its frozen FFN weights are exactly the finetune export's.
    key = "blocks.0.ffn.0.weight"
    with safe_open(str(out / "audio_finetune/export/audio_finetune.safetensors"), "pt") as a, \
            safe_open(str(release / "fusion.safetensors"), "pt") as f:
        assert np.array_equal(a.get_tensor(key).float().numpy(), f.get_tensor(f"audio_model.{key}").float().numpy())
    times = json.loads((out / "phase_times.json").read_text())
    assert {"world", "shards", "codecs", "latents", "stage 1", "stage 2", "stage 3"} <= set(times)
    with safe_open(str(release / "v2a.safetensors"), "pt") as p, \
            safe_open(str(release / "fusion.safetensors"), "pt") as f:  # the audio tower alone, in the model's shapes
        assert set(p.keys()) == {k for k in f.keys() if k.startswith("audio_model.")}
        assert all(p.get_slice(k).get_shape() == f.get_slice(k).get_shape() for k in p.keys())

    from ovi.pipeline import OviPipeline

    pipe = OviPipeline.from_config(toy_config(release, num_steps=2))
    g = pipe.generate("Two red balls bounce on a grey floor. Audio: sharp knocks on every bounce.", progress=False)
    assert tuple(g.video.shape) == (3, 121, 64, 64) and g.audio.numel() == 157 * 512
    assert g.settings["audio_from_video"] and g.settings["v2a_weights"].endswith("v2a.safetensors")
    assert np.isfinite(g.video.numpy()).all() and np.isfinite(g.audio.numpy()).all()

    # Killed and restarted: every phase is complete, so nothing runs again.
    before = (out / "phase_times.json").read_text()
    assert cli.main(["rebuild", "--quick", "--out", str(out)]) == 0
    assert (out / "phase_times.json").read_text() == before
    assert QUICK.clips == len(list((out / "world").glob("*.mp4")))


@pytest.mark.parametrize("steps", ["0", "-5", "many"])
def test_fusion_steps_must_be_positive_before_anything_runs(tmp_path, steps, capsys):
    with pytest.raises(SystemExit):
        cli.main(["rebuild", "--out", str(tmp_path / "toy"), "--fusion-steps", steps])
    assert "whole number of steps" in capsys.readouterr().err
    assert not (tmp_path / "toy").exists()
