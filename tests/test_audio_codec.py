"""Audio codec (mel front end, MMAudio VAE, BigVGAN): release manifests on meta, golden fixtures, loader errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import assert_close
from ovi.codecs.audio_codec import AudioCodec, build_audio_codec_on_meta
from ovi.codecs.audio_vae import load_audio_vae
from ovi.codecs.mel import MelFrontEnd
from ovi.codecs.vocoder import load_vocoder, remove_weight_norm, to_parametrization_names
from ovi.release import AUDIO_VAE, VOCODER
from ovi.state_dict_utils import StateDictMismatchError

EXACT_GROUPS = ("mel", "vae_encode", "wrapped_encode", "vae_decode", "vocoder", "wrapped_decode")
BF16_GROUPS = ("vae_decode", "vocoder", "wrapped_decode")
VAE_FILE, VOCODER_FILE = AUDIO_VAE.name, VOCODER.name  # a fixture holds the release files under their names
# Optional: the vocoder under the reference module's own parametrization key names.
PARAMETRIZATIONS_FILE = "best_netG_parametrizations.pt"


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    # The small-channel vocoder runs thousands of tiny convs: on a shared 2-core machine, intra-op
    # threads spin against other processes and bf16 decoding goes from ~1.5 s to ~15 s. The fixture's
    # README measures 1-thread runs as equivalent (bitwise for bf16, <= 1e-6 relative for float32).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- full-size manifests (meta device)


@pytest.fixture(scope="module")
def meta_codec() -> AudioCodec:
    return build_audio_codec_on_meta()


def _shapes(state_dict: dict[str, torch.Tensor]) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in state_dict.items()]


def _manifest_shapes(tensors: list[dict]) -> list[tuple[str, list[int]]]:
    return [(t["key"], list(t["shape"])) for t in tensors]


def test_vae_matches_release_manifest(meta_codec: AudioCodec, reference_dir: Path) -> None:
    manifest = json.loads((reference_dir / "mmaudio_vae_16k_keys.json").read_text())
    sd = meta_codec.vae.state_dict()
    assert _shapes(sd) == _manifest_shapes(manifest["tensors"])
    totals = manifest["totals"]
    assert sum(v.numel() for v in sd.values()) == totals["all_file_tensors"]
    assert len(sd) == totals["num_tensors"]
    assert sum(p.numel() for p in meta_codec.vae.encoder.parameters()) == totals["encoder"]
    assert sum(p.numel() for p in meta_codec.vae.decoder.parameters()) == totals["decoder"]


def test_vocoder_matches_release_manifest(reference_dir: Path) -> None:
    manifest = json.loads((reference_dir / "bigvgan_16k_keys.json").read_text())
    vocoder = build_audio_codec_on_meta().vocoder  # own copy: weight norm is removed below
    file_sd = to_parametrization_names(vocoder.state_dict())
    assert sorted(_shapes(file_sd)) == sorted(_manifest_shapes(manifest["tensors"]))
    assert sum(v.numel() for v in file_sd.values()) == manifest["totals"]["all_file_tensors"]
    remove_weight_norm(vocoder)
    runtime = vocoder.state_dict()
    assert sorted(_shapes(runtime)) == sorted(_manifest_shapes(manifest["runtime_tensors"]))
    assert sum(v.numel() for v in runtime.values()) == manifest["totals"]["runtime_after_remove_weight_norm"]


def test_latent_lengths_match_reference_table(audio_codec_dir: Path) -> None:
    lengths = json.loads((audio_codec_dir / "config.json").read_text())["lengths"]
    mel = MelFrontEnd()
    for n, row in lengths["cases"].items():
        assert mel.num_frames(int(n)) == row["mel_frames"], n
        assert AudioCodec.num_latents(int(n)) == row["latents"], n
        assert AudioCodec.num_samples(row["latents"]) == row["decoded_samples"], n


# ---------------------------------------------------------------- golden fixture


def _config(fixture: Path) -> dict:
    return json.loads((fixture / "config.json").read_text())


def _load(fixture: Path, dtype: torch.dtype, vocoder_file: str = VOCODER_FILE) -> AudioCodec:
    build = _config(fixture)["build"]
    return AudioCodec.from_files(
        fixture / VAE_FILE,
        fixture / vocoder_file,
        vae_hidden_dim=build["hidden_dim"],
        vocoder_config=build["vocoder_config"],
        dtype=dtype,
    )


def _engine_latent(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return inputs["engine_latent"].unsqueeze(0).transpose(1, 2)  # DiT [L, 20] -> VAE [1, 20, L]


def _latent(inputs: dict[str, torch.Tensor], case: str) -> torch.Tensor:
    return _engine_latent(inputs) if case == "engine_latent" else inputs[f"latent.{case}"]


@torch.inference_mode()
def _compute(codec: AudioCodec, key: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Our output for a golden key `<group>.<case>[.<part>]`, in the reference's layout."""
    group, case, *part = key.split(".")
    dtype = codec.dtype
    if group == "mel":
        return codec.mel(inputs[f"wave.{case}"])
    if group == "vae_encode":
        mel = inputs[f"mel.{case}"].to(dtype)
        return codec.vae.encode_moments(mel) if part == ["moments"] else codec.vae.encode(mel)
    if group == "wrapped_encode":
        return codec.encode(inputs[f"wave.{case}"])[int(part[0])].transpose(0, 1)
    if group == "vae_decode":
        return codec.vae.decode(_latent(inputs, case).to(dtype))
    if group == "vocoder":
        return codec.vocode(inputs[f"mel.{case}"]).unsqueeze(1)  # reference keeps [B, 1, N]
    if group == "wrapped_decode":
        return codec.decode(_latent(inputs, case)).unsqueeze(1)
    raise KeyError(f"unknown golden group {group!r} in {key}")


@pytest.fixture(scope="module")
def golden(audio_codec_dir: Path) -> dict:
    return {
        "inputs": load_file(audio_codec_dir / "inputs.safetensors"),
        "fp64": load_file(audio_codec_dir / "outputs_fp64.safetensors"),
        "bf16": load_file(audio_codec_dir / "outputs_bf16.safetensors"),
        "tolerances": _config(audio_codec_dir)["tolerances"],
    }


@pytest.fixture(scope="module")
def codec_fp32(audio_codec_dir: Path) -> AudioCodec:
    return _load(audio_codec_dir, torch.float32)


@pytest.fixture(scope="module")
def codec_bf16(audio_codec_dir: Path) -> AudioCodec:
    return _load(audio_codec_dir, torch.bfloat16)


def test_mel_filterbank_and_window_match_fixture(audio_codec_dir: Path) -> None:
    buffers = load_file(audio_codec_dir / "mel_frontend_buffers.safetensors")
    mel = MelFrontEnd()
    assert torch.equal(mel.window, buffers["hann_window"])
    # Same float64 arithmetic and float32 roundings as librosa: equal to the last bit or within one ulp.
    assert_close(mel.mel_basis, buffers["mel_basis"], rel=1e-7, abs_=1e-9, name="mel_basis")


@pytest.mark.parametrize("group", EXACT_GROUPS)
def test_exact_tier_float32_vs_fp64(group: str, codec_fp32: AudioCodec, golden: dict) -> None:
    tol = golden["tolerances"]["exact"]["groups"][group]
    keys = [k for k in golden["fp64"] if k.split(".")[0] == group]
    assert keys, f"fixture has no {group} outputs"
    for key in keys:
        out = _compute(codec_fp32, key, golden["inputs"])
        assert out.dtype == torch.float32, key
        assert_close(out, golden["fp64"][key], rel=tol["rel_l2"], abs_=tol["max_abs"], name=key)


@pytest.mark.parametrize("group", BF16_GROUPS)
def test_bf16_tier(group: str, codec_bf16: AudioCodec, golden: dict) -> None:
    tol = golden["tolerances"]["bf16"]["groups"][group]
    keys = [k for k in golden["bf16"] if k.split(".")[0] == group]
    assert keys, f"fixture has no bf16 {group} outputs"
    inputs = {k: v.to(torch.bfloat16) for k, v in golden["inputs"].items()}
    for key in keys:
        out = _compute(codec_bf16, key, inputs)
        assert out.dtype == torch.bfloat16, key
        assert_close(
            out, golden["bf16"][key], rel=tol["rel_l2"], abs_frac_of_max=tol["max_abs_over_ref_max"], name=key
        )


def test_bf16_encode_tracks_exact_target(codec_bf16: AudioCodec, golden: dict) -> None:
    # The reference cannot encode in bf16 (its front end raises); ours keeps the front end in float32 and
    # runs the VAE in bf16. Held to the bf16 tier bounds of the decode path.
    tol = golden["tolerances"]["bf16"]["groups"]["wrapped_decode"]
    cases = sorted({k.split(".")[1] for k in golden["fp64"] if k.startswith("wrapped_encode.")})
    assert cases, "fixture has no wrapped_encode outputs"
    for case in cases:
        with torch.inference_mode():
            out = codec_bf16.encode(golden["inputs"][f"wave.{case}"])  # [B, 20, L]
        assert out.dtype == torch.bfloat16
        ref = torch.stack([golden["fp64"][f"wrapped_encode.{case}.{b}"].T for b in range(out.shape[0])])
        assert_close(out, ref, rel=tol["rel_l2"], abs_frac_of_max=tol["max_abs_over_ref_max"], name=case)


def test_parametrization_named_vocoder_file_loads_identically(audio_codec_dir: Path, codec_fp32: AudioCodec) -> None:
    if not (audio_codec_dir / PARAMETRIZATIONS_FILE).is_file():
        pytest.skip(f"{audio_codec_dir.name} has no optional {PARAMETRIZATIONS_FILE}")
    cfg = _config(audio_codec_dir)["build"]["vocoder_config"]
    other = load_vocoder(audio_codec_dir / PARAMETRIZATIONS_FILE, config=cfg)
    ours, theirs = codec_fp32.vocoder.state_dict(), other.state_dict()
    assert ours.keys() == theirs.keys()
    assert not any(k.endswith(("weight_g", "weight_v")) for k in theirs), "weight norm must be folded"
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k


def test_vae_refuses_raw_weights_after_reload(codec_fp32: AudioCodec, audio_codec_dir: Path) -> None:
    vae = load_audio_vae(audio_codec_dir / VAE_FILE, hidden_dim=_config(audio_codec_dir)["build"]["hidden_dim"])
    vae.load_state_dict(torch.load(audio_codec_dir / VAE_FILE, weights_only=True))
    with pytest.raises(RuntimeError, match="normalize_weights"):
        vae.decode(torch.zeros(1, vae.embed_dim, 2))
    vae.normalize_weights()
    for k, v in vae.state_dict().items():
        assert torch.equal(v, codec_fp32.vae.state_dict()[k]), k


# ---------------------------------------------------------------- loader errors


def test_missing_file_names_release_file_and_download(tmp_path: Path, audio_codec_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"v1-16\.pth.*ovi-download.*checkpoints/MMAudio/ext_weights"):
        AudioCodec.from_files(tmp_path / "nope.pth", audio_codec_dir / VOCODER_FILE)
    build = _config(audio_codec_dir)["build"]
    with pytest.raises(FileNotFoundError, match=r"best_netG\.pt.*ovi-download"):
        AudioCodec.from_files(
            audio_codec_dir / VAE_FILE, tmp_path / "nope.pt", vae_hidden_dim=build["hidden_dim"]
        )


def test_wrong_keys_are_listed(tmp_path: Path, audio_codec_dir: Path) -> None:
    build = _config(audio_codec_dir)["build"]
    sd = torch.load(audio_codec_dir / VAE_FILE, weights_only=True)
    sd["encoder.bogus.weight"] = sd.pop("encoder.conv_in.weight")
    sd["data_mean"] = torch.zeros(1, 3, 1)
    bad = tmp_path / VAE_FILE
    torch.save(sd, bad)
    with pytest.raises(StateDictMismatchError) as err:
        AudioCodec.from_files(bad, audio_codec_dir / VOCODER_FILE, vae_hidden_dim=build["hidden_dim"])
    msg = str(err.value)
    assert "1 missing keys: encoder.conv_in.weight" in msg
    assert "1 unexpected keys: encoder.bogus.weight" in msg
    assert "1 mis-shaped keys: data_mean (1, 3, 1) (expected (1, 80, 1))" in msg

    # The release-size default against the reduced fixture: every conv is mis-shaped, the count says so.
    with pytest.raises(StateDictMismatchError, match=r"mis-shaped keys: .*more\).*hidden_dim=384"):
        AudioCodec.from_files(audio_codec_dir / VAE_FILE, audio_codec_dir / VOCODER_FILE)

    voc = torch.load(audio_codec_dir / VOCODER_FILE, weights_only=True)
    bad_voc = tmp_path / VOCODER_FILE
    torch.save(voc["generator"], bad_voc)  # a bare state_dict, not {'generator': ...}
    with pytest.raises(StateDictMismatchError, match="generator"):
        load_vocoder(bad_voc, config=build["vocoder_config"])


def test_encode_only_codec_refuses_to_decode_clearly() -> None:
    from ovi.codecs.audio_vae import AudioVAE

    codec = AudioCodec(AudioVAE(hidden_dim=8).normalize_weights(), vocoder=None)
    wave = torch.randn(1, AudioCodec.num_samples(4))
    assert codec.encode(wave).shape[:2] == (1, 20)
    with pytest.raises(RuntimeError, match="without a vocoder"):
        codec.decode(torch.randn(1, 20, 4))
