"""The toy recipe end to end with the real tools (``ovi-toy rebuild --quick``): world -> ovi-data shards ->
codecs -> precompute -> stage 1 (pretrain, finetune) -> stage 2 -> a release folder that the generation
pipeline loads and samples; a second run resumes by skipping every finished phase."""
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
                 "tokenizer/tokenizer.json", "griffin_lim.json")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_quick_rebuild_makes_a_release_the_pipeline_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "toy"
    assert cli.main(["rebuild", "--quick", "--out", str(out)]) == 0
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
    assert {"world", "shards", "codecs", "latents", "stage 1", "stage 2"} <= set(times)

    from ovi.pipeline import OviPipeline

    pipe = OviPipeline.from_config(toy_config(release, num_steps=2))
    g = pipe.generate("Two red balls bounce on a grey floor. Audio: sharp knocks on every bounce.", progress=False)
    assert tuple(g.video.shape) == (3, 121, 64, 64) and g.audio.numel() == 157 * 512
    assert np.isfinite(g.video.numpy()).all() and np.isfinite(g.audio.numpy()).all()

    # Killed and restarted: every phase is complete, so nothing runs again.
    before = (out / "phase_times.json").read_text()
    assert cli.main(["rebuild", "--quick", "--out", str(out)]) == 0
    assert (out / "phase_times.json").read_text() == before
    assert QUICK.clips == len(list((out / "world").glob("*.mp4")))
