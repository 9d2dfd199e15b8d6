"""Checkpoint I/O: release-format save/load round trip and clear errors for wrong files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ovi.checkpoints import CheckpointMismatchError, load_fusion_checkpoint, save_fusion_checkpoint
from ovi.config import load_fusion_config
from ovi.models.fusion import FusionModel
from ovi.models.stream import Stream

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    cfg = load_fusion_config(REPO / "configs/model/tiny.yaml")
    torch.manual_seed(0)
    model = FusionModel(cfg)
    with torch.no_grad():  # the reference init zeroes the heads; give them values so outputs are non-trivial
        for tower in (model.video_model, model.audio_model):
            tower.head.head.weight.normal_(std=0.02)
    return cfg, model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_load_round_trip_is_bit_identical(tmp_path: Path, tiny, dtype: torch.dtype) -> None:
    cfg, model = tiny
    path = save_fusion_checkpoint(model, tmp_path / "model.safetensors", dtype=dtype)
    loaded = load_fusion_checkpoint(path, cfg, dtype=None)
    for k, v in model.state_dict().items():
        got = loaded.state_dict()[k]
        assert got.dtype == dtype and torch.equal(got, v.to(dtype)), k
    assert not any(p.is_meta for p in loaded.parameters())
    # The file itself is in the release layout: flat keys, nothing else.
    assert set(load_file(path)) == set(model.state_dict())
    video, audio, ctx = [torch.randn(48, 1, 4, 4)], [torch.randn(5, 20)], [torch.randn(3, 4096)]
    streams = Stream(video, torch.tensor([400]), ctx), Stream(audio, torch.tensor([400]), ctx)
    with torch.no_grad():
        a = model.to(dtype)(*streams)
        b = loaded(*streams)
    model.float()
    # Weights are bit-identical; outputs agree to rounding (BLAS may pick other kernels for other buffers).
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert torch.allclose(a[0][0], b[0][0], atol=tol) and torch.allclose(a[1][0], b[1][0], atol=tol)


def test_fp8_file_is_upcast_on_load(tmp_path: Path, tiny) -> None:
    cfg, model = tiny
    state = {k: v.to(torch.float8_e4m3fn) for k, v in model.state_dict().items()}
    save_file(state, tmp_path / "model_fp8_e4m3fn.safetensors")
    loaded = load_fusion_checkpoint(tmp_path / "model_fp8_e4m3fn.safetensors", cfg, dtype=torch.bfloat16)
    k = "video_model.blocks.0.self_attn.q.weight"
    assert loaded.state_dict()[k].dtype == torch.bfloat16
    assert torch.equal(loaded.state_dict()[k], state[k].to(torch.bfloat16))


def test_missing_and_renamed_keys_are_named(tmp_path: Path, tiny) -> None:
    cfg, model = tiny
    state = dict(model.state_dict())
    state.pop("audio_model.head.head.bias")
    state["video_model.blocks.0.ffn.9.weight"] = state.pop("video_model.blocks.0.ffn.0.weight")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:
        load_fusion_checkpoint(tmp_path / "bad.safetensors", cfg)
    msg = str(err.value)
    assert "2 missing keys" in msg and "audio_model.head.head.bias" in msg and "video_model.blocks.0.ffn.0.weight" in msg
    assert "1 unexpected keys" in msg and "video_model.blocks.0.ffn.9.weight" in msg
    assert "model_960x960.safetensors" in msg  # names the expected release files


def test_wrong_config_reports_mis_shaped_keys(tmp_path: Path, tiny) -> None:
    cfg, model = tiny
    path = save_fusion_checkpoint(model, tmp_path / "model.safetensors")
    wider = load_fusion_config(REPO / "configs/model/tiny.yaml", ["video.ffn_dim=512"])
    with pytest.raises(CheckpointMismatchError, match=r"mis-shaped keys: video_model.blocks.0.ffn.0.weight"):
        load_fusion_checkpoint(path, wider)


def test_missing_file_names_download_command(tmp_path: Path, tiny) -> None:
    cfg, _ = tiny
    with pytest.raises(FileNotFoundError, match="ovi-download"):
        load_fusion_checkpoint(tmp_path / "nope.safetensors", cfg)
