"""Wan2.2 video VAE: release key layout, fixture outputs at both precision tiers, loaders and their errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_close
from safetensors.torch import load_file
from torch import nn

from ovi.codecs.video_vae import VideoVAE, _weights_cast_while_running, build_wan22_vae, convert_wan22_vae_state_dict
from ovi.release import VIDEO_VAE
from ovi.state_dict_utils import StateDictMismatchError

RELEASE_FILE = VIDEO_VAE.name  # a fixture holds the release file under its release name


def _cases(inputs: dict[str, torch.Tensor], prefix: str) -> list[str]:
    """The fixture's own case names: ``video.<v>`` clips to encode, ``latent.<v>`` encodings to decode."""
    return sorted(k.removeprefix(prefix) for k in inputs if k.startswith(prefix))


def _config(fixture: Path) -> dict:
    return json.loads((fixture / "config.json").read_text())


def _overrides(fixture: Path) -> dict:
    """The fixture's diffusers AutoencoderKLWan arguments (its reduced widths)."""
    return {k: v for k, v in _config(fixture)["constructors"]["diffusers_equivalent"].items() if k != "class"}


def _load(fixture: Path, **kwargs) -> VideoVAE:
    return VideoVAE.from_wan_checkpoint(fixture / RELEASE_FILE, config_overrides=_overrides(fixture), **kwargs)


def _run_all(vae: VideoVAE, inputs: dict[str, torch.Tensor], cast) -> dict[str, torch.Tensor]:
    """Every output of the fixture; ``cast`` maps a stored input to what this tier feeds the VAE."""
    out = {f"encode.{v}": vae.encode(cast(inputs[f"video.{v}"])) for v in _cases(inputs, "video.")}
    if "engine_latent" in inputs:  # a DiT-like latent, decoded as the engine does
        out["decode.engine_latent"] = vae.decode(cast(inputs["engine_latent"]))
    out.update({f"decode.roundtrip_{v}": vae.decode(cast(inputs[f"latent.{v}"])) for v in _cases(inputs, "latent.")})
    return out


def _check_tier(out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], groups: dict, tier: str) -> None:
    assert set(out) == set(ref), f"outputs {sorted(out)} != reference keys {sorted(ref)}"
    for key, value in out.items():
        tol = groups[key.split(".")[0]]
        bound = {"abs_": tol["max_abs"]} if "max_abs" in tol else {"abs_frac_of_max": tol["max_abs_over_ref_max"]}
        assert_close(value, ref[key], rel=tol["rel_l2"], name=f"{tier} {key}", **bound)


# ----------------------------------------------------------------------------- full-size layout


def test_full_size_keys_match_release_manifest(reference_dir: Path) -> None:
    manifest = json.loads((reference_dir / "wan22_vae_keys.json").read_text())
    release = {t["key"]: torch.empty(t["shape"], device="meta") for t in manifest["tensors"]}
    renamed = convert_wan22_vae_state_dict(release)
    assert len(renamed) == len(release) == manifest["totals"]["num_tensors"], "renaming must be one-to-one"

    model = build_wan22_vae(device="meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in renamed.items()} == expected

    totals = manifest["totals"]
    assert sum(p.numel() for p in model.parameters()) == totals["all"]
    assert sum(p.numel() for p in model.encoder.parameters()) == totals["encoder"]
    assert sum(p.numel() for p in model.decoder.parameters()) == totals["decoder"]
    assert len(model.config.latents_mean) == len(model.config.latents_std) == model.config.z_dim


# --------------------------------------------------------------------------------- fixture tiers


@pytest.fixture(scope="module")
def inputs(video_vae_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(video_vae_dir / "inputs.safetensors")


def test_latent_statistics_are_the_reference_float32_values(video_vae_dir: Path, inputs) -> None:
    vae = VideoVAE(build_wan22_vae(_overrides(video_vae_dir), device="meta"))
    assert torch.equal(vae.latents_mean, inputs["scale.mean"])
    assert torch.equal(vae.latents_inv_std, inputs["scale.inv_std"])


def test_exact_tier_float32_matches_fp64(video_vae_dir: Path, inputs) -> None:
    vae = _load(video_vae_dir, dtype=torch.float32)
    out = _run_all(vae, inputs, lambda t: t.float())
    ref = load_file(video_vae_dir / "outputs_fp64.safetensors")
    _check_tier(out, ref, _config(video_vae_dir)["tolerances"]["exact"]["groups"], "float32")


@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16], ids=["compute_fp32", "compute_bf16"])
def test_engine_tier_bf16_weights(video_vae_dir: Path, inputs, compute_dtype: torch.dtype) -> None:
    # The engine stores bf16 weights and hands the VAE bf16 frames / latents; on a GPU it then computes
    # in float32 (autocast to float32). Pure bf16 compute is the other path the tolerances admit.
    vae = _load(video_vae_dir, dtype=torch.bfloat16, compute_dtype=compute_dtype)
    out = _run_all(vae, inputs, lambda t: t.to(torch.bfloat16))
    ref = load_file(video_vae_dir / "outputs_engine.safetensors")
    _check_tier(out, ref, _config(video_vae_dir)["tolerances"]["engine"]["groups"], f"engine/{compute_dtype}")
    # Storage is untouched by the per-layer casting.
    assert all(type(p) is nn.Parameter and p.dtype == torch.bfloat16 for p in vae.model.parameters())


def test_shapes_follow_the_causal_compression(video_vae_dir: Path, inputs) -> None:
    vae = _load(video_vae_dir)
    for name in _cases(inputs, "video."):  # a frame count not 1 + 4k drops the trailing frames
        video = inputs[f"video.{name}"].float()
        latent = vae.encode(video)
        b, _, t, h, w = video.shape
        s = vae.spatial_compression
        assert latent.shape == (b, vae.z_dim, vae.latent_frames(t), h // s, w // s), name
        assert vae.decode(latent).shape == (b, 3, 1 + vae.temporal_compression * (latent.shape[2] - 1), h, w), name
    with pytest.raises(ValueError, match="multiples of"):
        vae.encode(video[..., : h - 1, :])
    with pytest.raises(ValueError, match=r"latent \[B"):
        vae.decode(latent[:, :-1])


def test_diffusers_folder_loads_the_same_model(video_vae_dir: Path, inputs, tmp_path: Path) -> None:
    vae = _load(video_vae_dir)
    vae.model.save_pretrained(tmp_path / "vae")
    again = VideoVAE.from_pretrained(tmp_path / "vae")
    video = min((inputs[f"video.{v}"] for v in _cases(inputs, "video.")), key=torch.Tensor.numel).float()
    assert torch.equal(again.encode(video), vae.encode(video))


# ------------------------------------------------------------------------------------- errors


def test_missing_release_file_names_it_and_the_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        VideoVAE.from_wan_checkpoint(tmp_path / RELEASE_FILE)
    message = str(err.value)
    assert RELEASE_FILE in message and "ovi-download" in message and "checkpoints/Wan2.2-TI2V-5B" in message
    with pytest.raises(FileNotFoundError, match="config.json"):
        VideoVAE.from_pretrained(tmp_path)


def test_wrong_keys_are_listed_with_counts(video_vae_dir: Path, tmp_path: Path) -> None:
    state = torch.load(video_vae_dir / RELEASE_FILE, weights_only=True)
    dropped = [k for k in state if k.startswith("decoder.")]
    for k in dropped:
        del state[k]
    state["encoder.extra.weight"] = torch.zeros(1)
    state["conv2.bias"] = torch.zeros(state["conv2.bias"].numel() + 1)
    path = tmp_path / RELEASE_FILE
    torch.save(state, path)
    with pytest.raises(StateDictMismatchError) as err:
        VideoVAE.from_wan_checkpoint(path, config_overrides=_overrides(video_vae_dir))
    message = str(err.value)
    assert f"{len(dropped)} missing keys" in message and "decoder.conv_in.weight" in message
    assert "1 unexpected keys: encoder.extra.weight" in message
    assert "1 mis-shaped keys: post_quant_conv.bias" in message


def test_release_config_rejects_reduced_width_file(video_vae_dir: Path) -> None:
    # Without the width overrides the full-size config is expected: every width-dependent tensor is named.
    with pytest.raises(StateDictMismatchError, match=r"\d+ mis-shaped keys: encoder.conv_in.weight"):
        VideoVAE.from_wan_checkpoint(video_vae_dir / RELEASE_FILE)


def test_weight_casting_restores_storage_after_an_error() -> None:
    class Boom(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.weight.dtype != x.dtype:
                raise AssertionError("the weight was not cast for the forward")
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Linear(2, 2), Boom(2, 2)).to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="boom"), _weights_cast_while_running(model, torch.float32):
        model(torch.ones(1, 2))  # float32 input: Linear 0 only runs if its weight was cast
    assert all(type(p) is nn.Parameter and p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model)
