"""fp8 weight storage on the tiny fusion model: storage, bytes saved, accuracy, keys, skipped layers."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import rel_l2
from ovi.config import load_fusion_config
from ovi.models.fp8 import (
    FP8_DTYPE, FP8_MAX, FP8Linear, default_skip, linear_weight_bytes, store_linear_weights_fp8, to_fp8,
)
from ovi.models.fusion import FusionModel
from ovi.models.stream import Stream

REPO = Path(__file__).resolve().parents[1]
# fp8 e4m3 keeps 3 mantissa bits (relative rounding error up to 1/16 per weight); measured on this
# model (float32 and bfloat16): video ~0.015, audio ~0.05 rel_l2 vs the unquantised model, so 0.1 leaves
# room for other seeds without hiding a bug (a wrong upcast or a NaN gives O(1)).
FP8_REL_L2 = 0.1


@pytest.fixture(scope="module")
def tiny() -> FusionModel:
    torch.manual_seed(0)
    model = FusionModel(load_fusion_config(REPO / "configs/model/tiny.yaml"))
    with torch.no_grad():  # the reference init zeroes the heads; give them values so outputs are non-trivial
        for tower in (model.video_model, model.audio_model):
            tower.head.head.weight.normal_(std=0.02)
    return model.eval()


def _inputs(dtype: torch.dtype) -> dict:
    g = torch.Generator().manual_seed(1)
    video = [torch.randn(48, 2, 4, 4, generator=g).to(dtype)]
    audio = [torch.randn(6, 20, generator=g).to(dtype)]
    t = torch.tensor([700])
    video_context = [torch.randn(5, 4096, generator=g).to(dtype)]
    audio_context = [torch.randn(5, 4096, generator=g).to(dtype)]
    return dict(video=Stream(video, t, video_context), audio=Stream(audio, t, audio_context))


def _storage_bytes(model: nn.Module) -> int:
    return sum(t.nbytes for t in model.state_dict().values())


def test_weights_become_fp8_and_bytes_saved_match_storage(tiny) -> None:
    model = copy.deepcopy(tiny)
    before = _storage_bytes(model)
    saved = store_linear_weights_fp8(model)
    assert saved > 0 and saved == before - _storage_bytes(model)
    per_dtype = linear_weight_bytes(model)
    assert set(per_dtype) == {FP8_DTYPE, torch.float32} and per_dtype[FP8_DTYPE] * 3 == saved  # 4 -> 1 byte
    stored = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for name, m in stored.items():
        assert isinstance(m, FP8Linear) != default_skip(name), name
        assert (m.weight.dtype == FP8_DTYPE) == isinstance(m, FP8Linear), name
    assert isinstance(stored["video_model.blocks.0.ffn.0"], FP8Linear)
    assert isinstance(stored["audio_model.blocks.2.cross_attn.k_fusion"], FP8Linear)
    assert store_linear_weights_fp8(model) == 0  # already stored: nothing more to do


def test_state_dict_keys_unchanged_and_skipped_layers_untouched(tiny) -> None:
    model = copy.deepcopy(tiny)
    store_linear_weights_fp8(model)
    ref, got = tiny.state_dict(), model.state_dict()
    assert list(got) == list(ref)
    skipped = [k for k, v in got.items() if v.dtype != FP8_DTYPE]
    for k in skipped:
        assert torch.equal(got[k], ref[k]) and got[k].dtype == ref[k].dtype, k
    assert "video_model.head.head.weight" in skipped and "audio_model.time_projection.1.weight" in skipped
    assert "video_model.text_embedding.0.weight" in skipped and "video_model.blocks.1.modulation.modulation" in skipped
    for k in set(got) - set(skipped):
        assert torch.equal(got[k].float(), ref[k].clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE).float()), k
    # The fp8 state_dict loads back into a full-precision model (the weights upcast on copy).
    FusionModel(tiny.cfg, init=False).load_state_dict(got, strict=True)


def test_custom_skip_replaces_the_default(tiny) -> None:
    model = copy.deepcopy(tiny)
    store_linear_weights_fp8(model, skip=lambda name: "audio_model" in name)
    assert model.video_model.head.head.weight.dtype == FP8_DTYPE  # default skips no longer apply
    assert not any(isinstance(m, FP8Linear) for m in model.audio_model.modules())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_stays_close(tiny, dtype: torch.dtype) -> None:
    ref_model = copy.deepcopy(tiny).to(dtype)
    model = copy.deepcopy(tiny).to(dtype)
    store_linear_weights_fp8(model)
    with torch.no_grad():
        ref_v, ref_a = ref_model(**_inputs(dtype))
        v, a = model(**_inputs(dtype))
    for out, ref, name in ((v[0], ref_v[0], "video"), (a[0], ref_a[0], "audio")):
        assert out.dtype == dtype and torch.isfinite(out).all(), name
        err = rel_l2(out, ref)
        assert 0 < err < FP8_REL_L2, f"{name} {dtype}: rel_l2 {err:.4f}"


def test_to_dtype_keeps_fp8_storage(tiny) -> None:
    model = copy.deepcopy(tiny)
    store_linear_weights_fp8(model)
    w = model.video_model.blocks[0].self_attn.q.weight.clone()
    model.to(torch.bfloat16)
    q = model.video_model.blocks[0].self_attn.q
    assert q.weight.dtype == FP8_DTYPE and torch.equal(q.weight.float(), w.float())  # round trip is exact
    assert q.bias.dtype == torch.bfloat16 and model.video_model.head.head.weight.dtype == torch.bfloat16


def test_out_of_range_weights_saturate_instead_of_nan() -> None:
    w = torch.tensor([[1000.0, -1e6, float("inf"), 448.0, 0.1]])
    assert to_fp8(w).float().tolist() == [[448.0, -448.0, 448.0, 448.0, to_fp8(torch.tensor(0.1)).item()]]
    layer = nn.Linear(5, 1)
    with torch.no_grad():
        layer.weight.copy_(w)
    fp8 = FP8Linear.from_linear(layer)
    assert fp8.weight.dtype == FP8_DTYPE and torch.isfinite(fp8(torch.ones(2, 5))).all()


def test_fp8_release_file_values_are_stored_losslessly(tiny) -> None:
    """Weights read from the community fp8 file (a plain cast, upcast on load) go back to fp8 exactly."""
    model = copy.deepcopy(tiny)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(m.weight.to(FP8_DTYPE).to(torch.bfloat16).float())
    loaded = {k: v.clone() for k, v in model.state_dict().items()}
    store_linear_weights_fp8(model)
    for k, v in model.state_dict().items():
        if v.dtype == FP8_DTYPE:
            assert torch.equal(v.float(), loaded[k]), k
