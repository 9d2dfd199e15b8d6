"""The fusion model: the released key manifest, and the reference's numbers on tiny_fusion_* fixtures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import assert_close
from ovi.checkpoints import build_fusion_model, expected_shapes, parameter_count
from ovi.config import fusion_config_from_reference, load_fusion_config
from ovi.models.attention import attention, resolve_backend
from ovi.models.fusion import FusionModel
from ovi.models.rope import axis_split
from ovi.models.stream import Stream, clean_prefix_timesteps

REPO = Path(__file__).resolve().parents[1]


def test_release_manifest_keys_shapes_and_totals(reference_dir: Path) -> None:
    manifest = json.loads((reference_dir / "ovi_fusion_11b_keys.json").read_text())
    model = build_fusion_model(load_fusion_config(REPO / "configs/model/ovi_11b.yaml"))
    shapes = expected_shapes(model)
    want = {t["key"]: tuple(t["shape"]) for t in manifest["tensors"]}
    assert list(shapes) == [t["key"] for t in manifest["tensors"]]  # same keys, same order
    assert shapes == want
    totals = manifest["totals"]
    assert parameter_count(model) == totals["all"]
    assert parameter_count(model.video_model) == totals["video_model"]
    assert parameter_count(model.audio_model) == totals["audio_model"]
    fusion = {k: v for k, v in model.state_dict().items() if "_fusion" in k}
    assert parameter_count(fusion) == totals["fusion_layers"]


# -- golden tensors -----------------------------------------------------------------------------
def _load_case_inputs(inputs: dict, case: dict, name: str, dtype: torch.dtype) -> list[torch.Tensor] | None:
    keys = [f"{name}.{i}" for i in range(case["batch"])]
    if keys[0] not in inputs:
        return None
    return [inputs[k].to(dtype) for k in keys]


@pytest.fixture(scope="module")
def fixture(tiny_fusion_dir: Path):
    cfg_json = json.loads((tiny_fusion_dir / "config.json").read_text())
    cfg = fusion_config_from_reference(cfg_json["video_config_resolved"], cfg_json["audio_config_resolved"])
    model = FusionModel(cfg, init=False)
    model.load_state_dict(load_file(tiny_fusion_dir / "weights.safetensors"), strict=True)
    return {
        "model": model.eval(),
        "cases": cfg_json["forward"]["cases"],
        "inputs": load_file(tiny_fusion_dir / "inputs.safetensors"),
        "fp64": load_file(tiny_fusion_dir / "outputs_fp64.safetensors"),
        "bf16": load_file(tiny_fusion_dir / "outputs.safetensors"),
    }


def run_case(model: FusionModel, inputs: dict, name: str, case: dict, dtype: torch.dtype):
    p = {k: inputs[f"{name}.{k}"] for k in ("vid_seq_len", "audio_seq_len", "slg_layer", "first_frame_is_clean")}
    t = inputs[f"{name}.t"]
    video = _load_case_inputs(inputs, case, f"{name}.video", dtype)
    audio = _load_case_inputs(inputs, case, f"{name}.audio", dtype)
    video_seq_len = None if int(p["vid_seq_len"]) < 0 else int(p["vid_seq_len"])
    video_stream = audio_stream = None
    if video is not None:
        t_v = t
        if int(p["first_frame_is_clean"]):  # the reference's flag, as per-token timesteps
            vm = model.video_model
            t_v = clean_prefix_timesteps(t, [vm.num_tokens(u) for u in video], [vm.tokens_per_unit(u) for u in video],
                                         clean_units=1, seq_len=video_seq_len)
        video_stream = Stream(video, t_v, _load_case_inputs(inputs, case, f"{name}.vid_context", dtype), video_seq_len)
    if audio is not None:
        audio_stream = Stream(audio, t, _load_case_inputs(inputs, case, f"{name}.audio_context", dtype),
                              None if int(p["audio_seq_len"]) < 0 else int(p["audio_seq_len"]))
    with torch.no_grad():
        return model(video_stream, audio_stream, slg_layer=int(p["slg_layer"]) or None)  # the fixture stores 0 for "off"


def _streams(video, audio, t, v_ctx, a_ctx, video_seq_len=None, audio_seq_len=None) -> tuple[Stream, Stream]:
    return Stream(video, t, v_ctx, video_seq_len), Stream(audio, t, a_ctx, audio_seq_len)


@pytest.mark.parametrize("tier", ["fp32_vs_fp64", "bf16_vs_bf16"])
def test_forward_cases_match_reference(fixture, tier: str) -> None:
    dtype = torch.float32 if tier == "fp32_vs_fp64" else torch.bfloat16
    model = fixture["model"].to(dtype)
    golden = fixture["fp64"] if dtype == torch.float32 else fixture["bf16"]
    checked = 0
    for name, case in fixture["cases"].items():
        outs = dict(zip(("video_out", "audio_out"), run_case(model, fixture["inputs"], name, case, dtype)))
        for kind, tensors in outs.items():
            for i, out in enumerate(tensors or []):
                ref = golden[f"{name}.{kind}.{i}"]
                assert out.dtype == dtype
                if dtype == torch.float32:
                    assert_close(out, ref, rel=1e-5, abs_=1e-4, name=f"{name}.{kind}.{i}")
                else:
                    assert_close(out.float(), ref.float(), rel=4e-2, abs_frac_of_max=0.05, name=f"{name}.{kind}.{i}")
                checked += 1
    assert checked == sum(len(c["video_latent_shapes"] or []) + len(c["audio_latent_shapes"] or [])
                          for c in fixture["cases"].values())


def test_padding_does_not_change_outputs(fixture) -> None:
    """Extra padded tokens (video_seq_len / audio_seq_len) are masked out of every attention."""
    model = fixture["model"].float()
    g = torch.Generator().manual_seed(0)
    video, audio = [torch.randn(48, 2, 4, 4, generator=g)], [torch.randn(9, 20, generator=g)]
    ctx = [torch.randn(5, model.cfg.video.text_dim, generator=g)]
    t = torch.tensor([500])
    with torch.no_grad():
        v0, a0 = model(*_streams(video, audio, t, ctx, ctx))
        v1, a1 = model(*_streams(video, audio, t, ctx, ctx, video_seq_len=13, audio_seq_len=20))
    assert torch.allclose(v0[0], v1[0], atol=1e-5) and torch.allclose(a0[0], a1[0], atol=1e-5)


def test_slg_layer_validation(fixture) -> None:
    model = fixture["model"].float()
    video, audio, ctx = [torch.randn(48, 1, 2, 2)], [torch.randn(4, 20)], [torch.randn(3, 4096)]
    with pytest.raises(ValueError, match="slg_layer"):
        model(*_streams(video, audio, torch.tensor([10]), ctx, ctx), slg_layer=len(model.video_model.blocks))


def test_fresh_model_outputs_zero_and_video_fusion_scaled() -> None:
    model = FusionModel(load_fusion_config(REPO / "configs/model/tiny.yaml"))
    video, audio, ctx = [torch.randn(48, 1, 4, 4)], [torch.randn(6, 20)], [torch.randn(3, 4096)]
    with torch.no_grad():
        v, a = model(*_streams(video, audio, torch.tensor([700]), ctx, ctx))
    assert v[0].abs().max() == 0 and a[0].abs().max() == 0  # zero-initialised heads
    vk = model.video_model.blocks[0].cross_attn.k_fusion.weight.std()
    ak = model.audio_model.blocks[0].cross_attn.k_fusion.weight.std()
    assert 0.05 < float(vk.detach() / ak.detach()) < 0.2  # only the video tower's fusion projections are scaled by 1/10


def test_context_longer_than_text_len_is_a_clear_error() -> None:
    model = FusionModel(load_fusion_config(REPO / "configs/model/tiny.yaml"))
    too_long = [torch.randn(model.cfg.video.text_len + 1, 4096)]
    with pytest.raises(ValueError, match="at most"):
        model(*_streams([torch.randn(48, 1, 2, 2)], [torch.randn(4, 20)], torch.tensor([1]), too_long, too_long))


def test_sdpa_key_mask_equals_unpadded_attention() -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 7, 3, 8, generator=g) for _ in range(3))
    k_lens = torch.tensor([7, 4])
    out = attention(q, k, v, k_lens=k_lens, backend="sdpa")
    ref = attention(q[1:], k[1:, :4], v[1:, :4], backend="sdpa")
    assert torch.allclose(out[1:], ref, atol=1e-6)
    assert resolve_backend("auto", q) == "sdpa"  # CPU: no flash
    with pytest.raises(RuntimeError, match="sdpa"):
        resolve_backend("flash2", q)


def test_model_config_typos_and_missing_keys_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "configs/model/tiny.yaml").read_text().replace("num_heads: 4", "num_haeds: 4", 1))
    with pytest.raises(ValueError, match="num_haeds"):
        load_fusion_config(bad)
    missing = tmp_path / "missing.yaml"
    missing.write_text("video:\n  modality: video\n  in_dim: 48\n  out_dim: 48\n")
    with pytest.raises(ValueError, match="patch_size"):
        load_fusion_config(missing)


def test_towers_of_different_widths_fuse_and_exchange_information() -> None:
    """A video tower twice the audio tower's width (same head width): the cross-modal K/V bridge the widths,
    and each tower's output depends on the other tower's input."""
    cfg = load_fusion_config(REPO / "configs/model/tiny.yaml", ["video.dim=256", "video.num_heads=8", "video.ffn_dim=512"])
    model = FusionModel(cfg)
    k = model.video_model.blocks[0].cross_attn.k_fusion
    assert tuple(k.weight.shape) == (256, 128)  # audio width in, video width out
    assert tuple(model.audio_model.blocks[0].cross_attn.k_fusion.weight.shape) == (128, 256)
    g = torch.Generator().manual_seed(0)
    for p in model.parameters():  # zero-initialised heads would hide any exchange
        p.data.normal_(0, 0.05, generator=g)
    video, ctx = [torch.randn(48, 2, 4, 4, generator=g)], [torch.randn(3, 4096, generator=g)]
    audio, other_audio = [torch.randn(9, 20, generator=g)], [torch.randn(9, 20, generator=g)]
    other_video = [torch.randn(48, 2, 4, 4, generator=g)]
    t = torch.tensor([500])
    with torch.no_grad():
        v0, a0 = model(*_streams(video, audio, t, ctx, ctx))
        v1, _ = model(*_streams(video, other_audio, t, ctx, ctx))
        _, a1 = model(*_streams(other_video, audio, t, ctx, ctx))
    assert v0[0].shape == video[0].shape and a0[0].shape == audio[0].shape
    assert (v0[0] - v1[0]).abs().max() > 1e-4  # the video reads the audio
    assert (a0[0] - a1[0]).abs().max() > 1e-4  # and the audio the video


def test_towers_with_different_head_widths_are_refused() -> None:
    with pytest.raises(ValueError, match="head width"):
        load_fusion_config(REPO / "configs/model/tiny.yaml", ["video.dim=256"])


def test_toy_wide_ablation_keeps_the_toy_audio_tower() -> None:
    """configs/model/toy_wide.yaml reuses stage 1's audio tower, so its audio geometry must be toy.yaml's."""
    wide, toy = (load_fusion_config(REPO / f"configs/model/{n}.yaml") for n in ("toy_wide", "toy"))
    assert wide.audio == toy.audio and wide.video.dim != toy.video.dim
    model = FusionModel(wide)
    assert model.video_model.grid_size(torch.zeros(48, 31, 32, 32)) == (31, 16, 16)  # the release's 1x2x2 patches


def test_video_rope_temporal_scale_moves_the_frame_axis_with_the_audio() -> None:
    """A video tower's rope_temporal_scale multiplies its frame positions (rows and columns keep theirs), and
    audio token l then sits at video latent frame l * audio scale / video scale: the same rotation."""
    base = load_fusion_config(REPO / "configs/model/toy.yaml")
    scaled = load_fusion_config(REPO / "configs/model/toy.yaml",
                                ["video.rope_temporal_scale=3.0", "audio.rope_temporal_scale=0.6"])
    video = [torch.zeros(48, 4, 2, 2)]
    t1 = FusionModel(base).video_model.rope_table(video)
    model = FusionModel(scaled)
    t3, ta = model.video_model.rope_table(video), model.audio_model.rope_table([torch.zeros(16, 80)])
    nf = axis_split(model.video_model.head_dim)[0]  # the frame pairs come first
    assert torch.equal(t1.cos[..., nf:], t3.cos[..., nf:])  # rows and columns unchanged
    assert not torch.allclose(t1.cos[..., :nf], t3.cos[..., :nf])
    frame_1 = 1 * 2 * 2  # first token of latent frame 1 (f, h, w row-major)
    torch.testing.assert_close(t3.unit[0, frame_1, 0, :nf], ta.unit[0, 5, 0])  # audio 5 * 0.6 = frame 1 * 3.0
    assert not torch.allclose(t1.unit[0, frame_1, 0, :nf], ta.unit[0, 5, 0])
