"""LoRA adapters: target groups, save alone with metadata, several unmerged adapters, merge = unmerged output."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ovi.config import load_fusion_config
from ovi.lora import (AdapterInfo, LoraSpec, adapter_state, file_fingerprint, inject_lora, load_adapters,
                      merge_adapter, parse_adapter_arg, read_adapter, save_adapter, target_modules)
from ovi.models.fusion import FusionModel
from ovi.models.stream import Stream
from ovi.models.tower import Tower

TINY = Path(__file__).resolve().parents[1] / "configs/model/tiny.yaml"


def _model(seed: int = 0) -> FusionModel:
    torch.manual_seed(seed)
    model = FusionModel(load_fusion_config(TINY))
    for tower in (model.video_model, model.audio_model):
        torch.nn.init.normal_(tower.head.head.weight, std=0.02)
    return model.eval()


def _forward(model: FusionModel) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    xv, xa, text = torch.randn(48, 3, 4, 4, generator=g), torch.randn(11, 20, generator=g), [torch.randn(5, 4096, generator=g)]
    with torch.no_grad():
        v, a = model(Stream([xv], torch.tensor([600.0]), text), Stream([xa], torch.tensor([600.0]), text))
    return v[0], a[0]


def test_default_targets_are_attention_of_both_towers_and_ffn_is_selectable() -> None:
    model = _model()
    names = target_modules(model, LoraSpec(rank=4))
    assert len(names) == 2 * 3 * 10  # towers x blocks x (4 self + 4 text + 2 cross-modal)
    assert not any(".ffn." in n for n in names) and any(n.endswith("cross_attn.k_fusion") for n in names)
    ffn = target_modules(model, LoraSpec(rank=4, targets=["ffn"], towers=["audio_model"]))
    assert ffn and all(n.startswith("audio_model.") and ".ffn." in n for n in ffn)
    with pytest.raises(ValueError, match="match no module"):
        target_modules(Tower(load_fusion_config(TINY).audio), LoraSpec(rank=4, targets=["cross_modal"]))
    with pytest.raises(ValueError, match="unknown"):
        LoraSpec(rank=4, targets=["mlp"])


def test_an_injected_adapter_starts_as_the_identity_and_only_it_trains() -> None:
    model = _model()
    before = _forward(model)
    inject_lora(model, LoraSpec(rank=4))
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())
    after = _forward(model)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_saved_adapter_reloads_unmerged_and_matches_the_merged_weights(tmp_path: Path) -> None:
    model = _model()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    modules = inject_lora(model, LoraSpec(rank=4, alpha=8.0))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    trained = _forward(model)
    path = save_adapter(model, tmp_path / "a.safetensors", AdapterInfo(4, 8.0, ["self_attn"], modules, "tiny", "abc"))
    state, info = read_adapter(path)
    assert (info.rank, info.alpha, info.base_variant, info.base_fingerprint) == (4, 8.0, "tiny", "abc")
    assert len(state) == 2 * len(modules) and len(adapter_state(model)) == len(state)

    fresh = _model(seed=5)
    fresh.load_state_dict(base)
    load_adapters(fresh, [(path, 1.0)])
    assert all(torch.equal(x, y) for x, y in zip(_forward(fresh), trained))
    merged = _model(seed=5)
    merged.load_state_dict(merge_adapter(base, state, info))
    assert all(torch.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(_forward(merged), trained))

    halves = _model(seed=5)
    halves.load_state_dict(base)
    load_adapters(halves, [(path, 0.5), (path, 0.5)])  # two adapters at once, scales add
    assert all(torch.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(_forward(halves), trained))


def test_adapter_arguments_and_fingerprints(tmp_path: Path) -> None:
    assert parse_adapter_arg("a/b.safetensors:0.5") == ("a/b.safetensors", 0.5)
    assert parse_adapter_arg("a/b.safetensors") == ("a/b.safetensors", 1.0)
    f = tmp_path / "x.bin"
    f.write_bytes(b"\x00" * 8 + bytes(range(256)) * 100)
    first = file_fingerprint(f)
    f.write_bytes(b"\x00" * 8 + bytes(range(256)) * 99 + bytes(256))
    assert file_fingerprint(f) != first
    with pytest.raises(ValueError, match="not an ovi LoRA adapter"):
        AdapterInfo.from_metadata({"format": "pt"}, "x")
