"""ovi.toy.evaluate's generation loop: one seed per clip (with one seed for all, every clip started from the same
noise and the toy models gave every caption the same sound onsets), the caption as the prompt, resumable."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from ovi.presets import REPO_ROOT
from ovi.toy import evaluate
from ovi.toy.recovery import backdrop, moving_tokens, recovered, shrinkage_estimate
from ovi.toy.sidecar import write_sidecar


class RecordingPipe:
    """Stands in for OviPipeline: records (prompt, seed) and returns a 1-frame clip."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def generate(self, prompt: str, seed: int, progress: bool = True) -> SimpleNamespace:
        self.calls.append((prompt, seed))
        return SimpleNamespace(video=torch.zeros(3, 1, 16, 16), audio=torch.zeros(1600), fps=24.0, sample_rate=16000)


def test_each_clip_gets_its_own_seed_and_a_rerun_skips_what_exists(tmp_path, monkeypatch):
    prompts = tmp_path / "world"
    prompts.mkdir()
    for i in range(3):
        (prompts / f"toy_{i:05d}_flash.mp4").write_bytes(b"")  # only the names are read for condition "none"
        write_sidecar(prompts / f"toy_{i:05d}_flash.mp4", {"caption": f"caption {i}", "kind": "flash"})
    pipe = RecordingPipe()
    import ovi.pipeline

    monkeypatch.setattr(ovi.pipeline.OviPipeline, "from_config", classmethod(lambda cls, cfg: pipe))
    out = tmp_path / "out"
    cfg = evaluate.toy_config(tmp_path / "release")
    evaluate.generate_folder(cfg, prompts, out, limit=2)
    assert pipe.calls == [("caption 0", evaluate.SEED), ("caption 1", evaluate.SEED + 1)]
    assert sorted(p.name for p in out.glob("*.mp4")) == ["toy_00000_flash.mp4", "toy_00001_flash.mp4"]
    evaluate.generate_folder(cfg, prompts, out)  # resumes: only the third clip is new
    assert pipe.calls[2:] == [("caption 2", evaluate.SEED + 2)]


def test_i2v_gives_each_clip_its_own_first_frame_and_keeps_the_presets_second_pass(tmp_path, monkeypatch):
    import numpy as np

    import ovi.pipeline
    from ovi.media import write_mp4

    prompts = tmp_path / "world"
    prompts.mkdir()
    for i, level in enumerate((40, 200)):  # each clip opens on its own grey, then turns black
        frames = np.zeros((6, 16, 16, 3), np.uint8)
        frames[0] = level
        write_mp4(prompts / f"toy_{i:05d}_bounce.mp4", frames, np.zeros(4000, np.float32), fps=24, sample_rate=16000)
        write_sidecar(prompts / f"toy_{i:05d}_bounce.mp4", {"caption": f"caption {i}", "kind": "bounce"})
    images = []

    class ImagePipe(RecordingPipe):
        def generate(self, prompt: str, seed: int, progress: bool = True, **given) -> SimpleNamespace:
            images.append(given.pop("image"))
            assert not given  # the image alone: no given video or audio
            return super().generate(prompt, seed, progress)

    monkeypatch.setattr(ovi.pipeline.OviPipeline, "from_config", classmethod(lambda cls, cfg: ImagePipe()))
    evaluate.generate_folder(evaluate.toy_config(tmp_path), prompts, tmp_path / "out", condition="i2v")
    assert [img.shape for img in images] == [(16, 16, 3)] * 2
    assert [abs(float(img.mean()) - level) < 8 for img, level in zip(images, (40, 200))] == [True, True]
    seen = []
    monkeypatch.setattr(evaluate, "generate_folder", lambda cfg, *a, **k: seen.append(cfg.audio_from_video))
    monkeypatch.setattr(evaluate, "score_folder", lambda folder, shuffle=False: {})
    common = ["--release", str(tmp_path), "--prompts", str(prompts), "--out", str(tmp_path / "o")]
    for extra in (["--condition", "i2v"], ["--condition", "i2v", "--audio-from-video", "false"], ["--condition", "v2a"]):
        evaluate.main(common + extra)
    assert seen == [evaluate.toy_config(tmp_path).audio_from_video, False, False] and seen[0]


def test_flags_reach_the_config_given_modes_turn_the_second_pass_off_and_bad_ones_are_refused(tmp_path, monkeypatch):
    seen: list[object] = []
    configs: list[object] = []

    def fake_generate_folder(cfg, prompts, out, limit=None, condition="none", renoise=None):  # noqa: ANN001
        configs.append(cfg)
        seen.append((condition, cfg.audio_from_video, cfg.conditioning, cfg.sync_guidance_scale,
                     cfg.video_guidance_scale, renoise))

    monkeypatch.setattr(evaluate, "generate_folder", fake_generate_folder)
    monkeypatch.setattr(evaluate, "score_folder", lambda folder, shuffle=False: {})
    common = ["--release", str(tmp_path), "--prompts", str(tmp_path), "--out", str(tmp_path / "o")]
    for extra in ([], ["--audio-from-video", "true"], ["--audio-from-video", "false"],
                  ["--audio-from-video", "true", "--condition", "v2a"],
                  ["--condition", "v2a", "--conditioning", "noised", "--sync-guidance-scale", "0"],
                  ["--video-guidance-scale", "2"], ["--renoise", "0.5"], ["--shift", "1"]):
        assert evaluate.main(common + extra) == 0
    p = evaluate.toy_config(tmp_path)  # the preset's own settings
    kept = (p.conditioning, p.sync_guidance_scale, p.video_guidance_scale)
    assert p.video_guidance_scale != 2 and p.sync_guidance_scale != 0 and p.conditioning != "noised"
    assert seen == [("none", p.audio_from_video, *kept, None), ("none", True, *kept, None),
                    ("none", False, *kept, None), ("v2a", False, *kept, None),
                    ("v2a", False, "noised", 0.0, p.video_guidance_scale, None),
                    ("none", p.audio_from_video, *kept[:2], 2.0, None), ("none", p.audio_from_video, *kept, 0.5),
                    ("none", p.audio_from_video, *kept, None)]
    for bad in (["--renoise", "1.5"], ["--renoise", "0.5", "--condition", "v2a"]):  # refused before any loading
        with pytest.raises(SystemExit):
            evaluate.main(common + bad)
    assert len(seen) == 8 and [c.shift for c in configs] == [p.shift] * 7 + [1.0] and p.shift != 1.0
    assert all(c.checkpoints.root == str(tmp_path) for c in configs)
    assert evaluate.main(common + ["num_steps=50", "solver=euler"]) == 0  # any other preset setting
    assert (configs[-1].num_steps, configs[-1].solver) == (50, "euler") and p.num_steps != 50
    for bad in (["num_stepz=50"], ["num_steps=many"], ["solver=bogus"]):  # refused in one line before any loading
        with pytest.raises(SystemExit):
            evaluate.main(common + bad)
    assert len(configs) == 9
    cfg = evaluate.toy_config(tmp_path, audio_from_video=True)
    assert cfg.audio_from_video and cfg.checkpoints.root == str(tmp_path)


def test_a_release_without_v2a_weights_is_named_once(tmp_path, monkeypatch, caplog):
    """The no-V2A warning comes from the one config main builds, not once per place that builds it."""
    monkeypatch.setattr(evaluate, "generate_folder", lambda *a, **k: None)  # noqa: ARG005
    monkeypatch.setattr(evaluate, "score_folder", lambda folder, shuffle=False: {})
    evaluate.main(["--release", str(tmp_path), "--prompts", str(tmp_path), "--out", str(tmp_path / "o")])
    assert caplog.text.count("has no v2a.safetensors") == 1


def test_a_clip_without_its_caption_is_refused_in_one_line_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import ovi.pipeline

    def no_loading(cls, cfg):  # noqa: ANN001
        raise AssertionError("the model loaded before the captions were read")

    monkeypatch.setattr(ovi.pipeline.OviPipeline, "from_config", classmethod(no_loading))
    prompts = tmp_path / "world"
    prompts.mkdir()
    (prompts / "toy_00000_flash.mp4").write_bytes(b"")
    common = ["--release", str(REPO_ROOT / "checkpoints/toy"), "--prompts", str(prompts), "--out", str(tmp_path / "o")]
    for sidecar, said in ((None, "no sidecar toy_00000_flash.json"), ({"prompt": "x", "seed": 0}, "has no 'caption'")):
        if sidecar is not None:  # ovi-generate's own record: no caption
            write_sidecar(prompts / "toy_00000_flash.mp4", sidecar)
        with pytest.raises(SystemExit):
            evaluate.main(common)
        err = capsys.readouterr().err.strip().splitlines()
        assert said in err[-1] and "ovi-toy make" in err[-1] and not any("Traceback" in line for line in err)


def test_a_release_without_v2a_weights_loads_with_the_fusion_weights_making_the_sound(tmp_path, caplog):
    """`ovi-toy rebuild --ablations` writes stage-2-only folders (no v2a.safetensors); scoring them must work."""
    from ovi.pipeline import OviPipeline

    shipped = REPO_ROOT / "checkpoints" / "toy"  # as tests/test_toy_model.py
    assert evaluate.toy_config(shipped).checkpoints.v2a == "v2a.safetensors"  # the shipped folder keeps its own
    ablation = tmp_path / "unfused"
    ablation.mkdir()
    for item in shipped.iterdir():
        if item.name != "v2a.safetensors":
            (ablation / item.name).symlink_to(item)
    cfg = evaluate.toy_config(ablation)
    assert cfg.checkpoints.v2a == "" and not cfg.v2a_weights_used
    assert "has no v2a.safetensors" in caplog.text  # said, not silent
    assert OviPipeline.from_config(cfg).pass_weights is None


def test_recovery_measures_reward_the_moving_part_and_punish_clutter():
    """ovi.toy.recovery's two measures on known estimates: the truth, the backdrop alone, twice the truth (all of it
    given back, and as much again of clutter), noise only; and a clip where nothing moves (no figure, not a crash)."""
    video = torch.zeros(4, 9, 3, 3)
    video[:, 4, 1, 1] = 2.0  # one token lights up in one latent frame
    truth = video - backdrop(video)
    mask = moving_tokens(truth, share=1 / 81)
    assert mask.sum() == 1 and mask[4, 1, 1]
    assert recovered(truth, truth, mask) == (1.0, 1.0)
    assert recovered(truth, torch.zeros_like(truth), mask) == (0.0, 0.0)
    assert recovered(truth, 2 * truth, mask) == (2.0, 0.0)
    _, explained = recovered(truth, torch.randn(truth.shape, generator=torch.Generator().manual_seed(0)), mask)
    assert explained < 0
    assert all(math.isnan(v) for v in recovered(torch.zeros_like(truth), truth, mask))
    assert torch.equal(shrinkage_estimate(video, 0.0), video)  # no noise: the clip itself
