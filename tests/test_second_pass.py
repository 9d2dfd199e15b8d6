"""Sound from a clean video on its own weights (ovi.pass_weights, ``checkpoints.v2a``: the second pass of
``audio_from_video`` and V2A with ``conditioning=clean``) and sync guidance (ovi.sync_guidance,
``sync_guidance_scale``), on the tiny random preset: what they promise whatever the weights (the toy model's
figures are in the README and tests/test_toy_model.py)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ovi.components import random_components
from ovi.config import InferenceConfig, load_config, load_fusion_config
from ovi.pass_weights import PassWeights
from ovi.pipeline import OviPipeline
from ovi.release import missing_release_files
from ovi.sync_guidance import moved_in_time, sync_guided
from ovi.validation import settings_problems

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = REPO / "configs/model/tiny.yaml"
PROMPT = "A dog barks. Audio: barking"
FRAMES = np.random.default_rng(0).integers(0, 256, (25, 64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def pipe() -> OviPipeline:
    cfg = load_config(InferenceConfig, REPO / "configs/inference/tiny_cpu.yaml",
                      ["num_frames=25", "num_steps=2", f"model={TINY_MODEL}"])
    return OviPipeline.from_config(cfg)


def _with(pipe: OviPipeline, weights: str = "", **settings: object) -> OviPipeline:
    cfg = replace(pipe.cfg, checkpoints=replace(pipe.cfg.checkpoints, v2a=weights), **settings)
    return OviPipeline(pipe.c, cfg)


def test_pass_weights_are_in_place_only_inside_the_pass_and_back_after_an_error() -> None:
    layer = torch.nn.Linear(3, 2)
    own = layer.weight.detach().clone()
    swap = PassWeights(layer, {"weight": torch.ones(2, 3, dtype=torch.float64)})  # cast to the parameter's dtype
    with swap.applied():
        assert torch.equal(layer(torch.ones(1, 3)) - layer.bias, torch.full((1, 2), 3.0))
    assert torch.equal(layer.weight, own)
    with pytest.raises(RuntimeError, match="inside"), swap.applied():
        raise RuntimeError("inside")
    assert torch.equal(layer.weight, own) and layer.weight.dtype == torch.float32


def test_pass_weights_find_a_lora_wrapped_layer_by_its_base_name() -> None:
    wrapped = torch.nn.Module()  # peft keeps an adapted Linear as '<name>.base_layer'
    wrapped.q = torch.nn.Module()
    wrapped.q.base_layer = torch.nn.Linear(2, 2)
    with PassWeights(wrapped, {"q.weight": torch.zeros(2, 2)}).applied():
        assert not wrapped.q.base_layer.weight.any()
    assert wrapped.q.base_layer.weight.any()


@pytest.mark.parametrize("tensors, message", [
    ({"nope.weight": torch.zeros(2, 3)}, "1 unexpected keys: nope.weight"),
    ({"weight": torch.zeros(3, 3)}, r"mis-shaped keys: weight \(3, 3\) \(expected \(2, 3\)\)"),
    ({}, "holds no tensors"),
])
def test_pass_weights_that_do_not_fit_the_model_are_refused_with_the_fix(tensors, message) -> None:
    with pytest.raises(ValueError, match=message) as e:
        PassWeights(torch.nn.Linear(3, 2), tensors, source="w.safetensors")
    assert "train.export --only" in str(e.value)


def test_v2a_weights_make_the_sound_beside_a_clean_video_and_leave_the_loaded_model_as_it_was(pipe, tmp_path) -> None:
    other = random_components(load_fusion_config(TINY_MODEL), seed=1).model
    weights = tmp_path / "v2a.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items() if k.startswith("audio_model.")}, weights)
    before = {k: v.clone() for k, v in pipe.c.model.state_dict().items()}
    plain = _with(pipe, audio_from_video=True).generate(PROMPT, progress=False)
    own = _with(pipe, str(weights), audio_from_video=True).generate(PROMPT, progress=False)
    assert torch.equal(own.video, plain.video)  # the joint pass is the fusion file's
    assert not torch.allclose(own.audio, plain.audio, atol=1e-3)
    assert own.settings["v2a_weights"] == str(weights) and plain.settings["v2a_weights"] is None
    assert all(torch.equal(v, before[k]) for k, v in pipe.c.model.state_dict().items())
    # V2A given clean uses them too; given noised (the release's zero-shot way) or A2V does not.
    clean = _with(pipe, str(weights), conditioning="clean")
    v2a = [p.generate(PROMPT, video=FRAMES, progress=False) for p in (clean, _with(pipe, conditioning="clean"))]
    assert v2a[0].settings["v2a_weights"] == str(weights) and not torch.allclose(v2a[0].audio, v2a[1].audio, atol=1e-3)
    wave = np.zeros(16384, np.float32)
    a2v = clean.generate(PROMPT, audio=wave, progress=False)
    assert a2v.settings["v2a_weights"] is None
    assert torch.equal(a2v.video, _with(pipe, conditioning="clean").generate(PROMPT, audio=wave, progress=False).video)
    # Where no clean video is ever given the file is not read at all (a missing one included).
    assert _with(pipe, str(tmp_path / "missing.safetensors")).pass_weights is None
    with pytest.raises(FileNotFoundError, match="fix checkpoints.v2a"):
        _with(pipe, str(tmp_path / "missing.safetensors"), audio_from_video=True)


def test_missing_v2a_weights_are_reported_before_loading_only_when_used(tmp_path) -> None:
    path = tmp_path / "v2a.safetensors"
    cfg = load_config(InferenceConfig, None, [f"checkpoints.root={tmp_path}", f"checkpoints.v2a={path}"])
    assert path not in dict(missing_release_files(cfg))
    for used in (replace(cfg, audio_from_video=True), replace(cfg, conditioning="clean")):
        assert "the V2A weights (checkpoints.v2a)" in dict(missing_release_files(used))[path]


def test_moved_in_time_rolls_each_stream_by_its_own_rate() -> None:
    video = torch.arange(10.0).reshape(1, 10, 1, 1).expand(2, 10, 1, 1)  # [C, F, h, w]
    audio = torch.arange(50.0)[:, None]  # [L, C]
    v, a = moved_in_time(video, audio, 1.0)  # 6 latent frames, 31.25 -> 31 audio latents
    assert v[0, :, 0, 0].tolist() == [4, 5, 6, 7, 8, 9, 0, 1, 2, 3] and a[0, 0] == 19
    v, a = moved_in_time(video, None, 0.01)  # never a roll by nothing
    assert v[0, 0, 0, 0] == 9 and a is None


def test_sync_guidance_amplifies_only_the_named_stream_away_from_the_moved_branch() -> None:
    one = torch.ones(2)
    given = lambda x_v, x_a, t: (one * 1.0, one * 2.0)  # noqa: E731
    moved = lambda x_v, x_a, t: (one * 5.0, one * 1.5)  # noqa: E731
    v, a = sync_guided(given, moved, 2.0, video=False, audio=True)(None, None, None)
    assert torch.equal(v, one) and torch.equal(a, one * 3.0)  # 2 + 2 * (2 - 1.5)


def test_sync_guidance_changes_the_made_stream_only_beside_a_whole_given_one(pipe) -> None:
    base = pipe.generate(PROMPT, video=FRAMES, progress=False)
    off = _with(pipe, sync_guidance_scale=0.0).generate(PROMPT, video=FRAMES, progress=False)
    guided = _with(pipe, sync_guidance_scale=2.0).generate(PROMPT, video=FRAMES, progress=False)
    assert torch.equal(off.audio, base.audio)
    assert torch.equal(guided.video, base.video) and not torch.allclose(guided.audio, base.audio, atol=1e-3)
    assert guided.settings["sync_guidance_scale"] == 2.0
    # The same scale per call; an extension gives only a prefix: nothing whole to contrast, so no change.
    assert torch.equal(pipe.generate(PROMPT, video=FRAMES, progress=False, sync_guidance_scale=2.0).audio, guided.audio)
    ext = [_with(pipe, sync_guidance_scale=s).generate(PROMPT, extend=FRAMES, progress=False) for s in (0.0, 2.0)]
    assert torch.equal(ext[0].audio, ext[1].audio) and torch.equal(ext[0].video, ext[1].video)


@pytest.mark.parametrize("settings, message", [
    ({"sync_guidance_scale": -1.0}, "sync_guidance_scale=-1.0 must be >= 0 (0 turns it off)"),
    ({"sync_guidance_scale": 1.0, "sync_guidance_shift_s": 0.0},
     "sync_guidance_shift_s=0.0 must be between 0 and the clip's 5.04 s"),
    ({"sync_guidance_scale": 1.0, "sync_guidance_shift_s": 6.0}, "sync_guidance_shift_s=6.0 must be between 0"),
    ({"audio_from_video": True, "quantize": "int8"}, "cannot be combined with quantize=int8"),
])
def test_bad_second_pass_settings_are_one_line_each(settings, message) -> None:
    cfg = replace(InferenceConfig(num_frames=121), **settings)
    cfg = replace(cfg, checkpoints=replace(cfg.checkpoints, v2a="v2a.safetensors"))
    assert any(message in p for p in settings_problems(cfg)), settings_problems(cfg)
    off = replace(cfg, sync_guidance_scale=0.0, quantize="none")  # an unused shift is not checked
    assert not any("sync_guidance" in p for p in settings_problems(off))
