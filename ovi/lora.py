"""LoRA adapters on the fusion model (or a lone tower) through ``peft``: inject, save alone, load, merge.

    build model (release weights) --inject_lora(LoraSpec)--> base frozen, lora_A / lora_B trainable
    --train--> save_adapter(): only the adapter tensors [r, in] / [out, r] + metadata, as safetensors
    --generation--> load_adapters(model, [(path, scale), ...]): several adapters, none merged
    --export--> merge_adapter(base state, adapter, scale): W + scale * alpha / r * B @ A, release format

Targets are named by group (``TARGET_GROUPS``), resolved to module names on the built model, so an adapter
stores the exact module list it was trained on and loads onto the same modules. The cross-modal layers are
found through the tower's own policy (``Tower.is_cross_modal``), not by parsing names here.
An adapter's base is named by variant and a fingerprint of the base file (:func:`file_fingerprint`): a
mismatch is reported when loading, since an adapter trained on another base is usually a mistake.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch
from safetensors import safe_open
from torch import nn

from ovi.checkpoints import atomic_save_safetensors
from ovi.models.tower import Tower

ADAPTER_FORMAT = "ovi-lora-1"
META_PREFIX = "ovi.lora."  # safetensors metadata keys (beside the training export's "ovi.<field>" keys)
# Group -> module-name suffixes inside a block (blocks.N.<suffix>). q and o of cross_attn are shared by the
# text and the cross-modal attention (CrossAttention sums both before o), so they belong to "text_attn".
TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    "self_attn": ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o"),
    "text_attn": ("cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o"),
    "cross_modal": ("cross_attn.k_fusion", "cross_attn.v_fusion"),
    "ffn": ("ffn.0", "ffn.2"),
}
DEFAULT_TARGETS = ("self_attn", "text_attn", "cross_modal")
LORA_KEY = re.compile(r"\.lora_(A|B)\.([^.]+)\.weight$")  # peft's '<module>.lora_A.<adapter>.weight'


@dataclass
class LoraSpec:
    """What to adapt and how (the trainer's ``lora:`` block; ``rank: 0`` = no LoRA)."""

    rank: int = 0
    alpha: float = 16.0  # update scale alpha / rank, as peft
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))  # keys of TARGET_GROUPS
    towers: list[str] = field(default_factory=lambda: ["video_model", "audio_model"])  # fusion model only

    def __post_init__(self) -> None:
        unknown = sorted(set(self.targets) - set(TARGET_GROUPS))
        if unknown:
            raise ValueError(f"lora.targets {unknown} unknown; choose from {sorted(TARGET_GROUPS)}")
        if self.rank < 0:
            raise ValueError(f"lora.rank must be >= 0 (0 disables LoRA), got {self.rank}")


def target_modules(model: nn.Module, spec: LoraSpec) -> list[str]:
    """Full names of the ``nn.Linear`` modules ``spec`` adapts (sorted; a group that matches nothing is an error)."""
    suffixes = {s: g for g in spec.targets for s in TARGET_GROUPS[g]}
    found: dict[str, list[str]] = {g: [] for g in spec.targets}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or ".lora_" in name or name.endswith("base_layer"):
            continue
        tower = name.split(".")[0]
        if tower.endswith("_model") and tower not in spec.towers:
            continue
        m = re.search(r"(?:^|\.)blocks\.\d+\.(.+)$", name)
        if m and m.group(1) in suffixes:
            group = suffixes[m.group(1)]
            if group == "cross_modal" and not Tower.is_cross_modal(name):
                continue
            found[group].append(name)
    empty = [g for g, names in found.items() if not names]
    if empty:
        raise ValueError(f"lora.targets {empty} match no module of this model (a lone tower has no cross_modal "
                         "layers); remove them")
    return sorted(n for names in found.values() for n in names)


def inject_lora(model: nn.Module, spec: LoraSpec, adapter: str = "default",
                modules: list[str] | None = None) -> list[str]:
    """Add a LoRA adapter in place (the model keeps its class and forward); returns the adapted module names.

    Only the adapter trains afterwards (peft freezes the rest); the trainer's ``trainable`` patterns then
    apply on top. ``lora_B`` starts at zero, so the model's output is unchanged until it trains.
    """
    from peft import LoraConfig, inject_adapter_in_model

    modules = modules or target_modules(model, spec)
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=modules,
                        bias="none")
    inject_adapter_in_model(config, model, adapter_name=adapter)
    return modules


def lora_layers(model: nn.Module) -> Iterable[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return (m for m in model.modules() if isinstance(m, LoraLayer))


def adapter_state(model: nn.Module, adapter: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's tensors keyed '<module>.lora_A.weight' / '.lora_B.weight' (no adapter name: portable)."""
    out = {}
    for name, p in model.named_parameters():
        m = LORA_KEY.search(name)
        if m and m.group(2) == adapter:
            out[name[: m.start()] + f".lora_{m.group(1)}.weight"] = p.detach()
    return out


def base_name(name: str) -> str:
    """A parameter's name in the base model: peft moves the adapted Linear's weight under '.base_layer'."""
    return name.replace(".base_layer.", ".")


def file_fingerprint(path: str | Path, samples: int = 64, chunk: int = 1 << 16) -> str:
    """sha256 over a file's size, its safetensors header and ``samples`` evenly spaced chunks.

    Reading a whole 11B release (~23 GB) takes minutes; this reads ~4 MB and still tells two trained
    files apart (the sampled bytes are weights). It is an identity check, not an integrity check.
    """
    path = Path(path)
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as f:
        head = f.read(8)
        h.update(f.read(int.from_bytes(head, "little")) if len(head) == 8 else head)
        for i in range(samples):
            f.seek(size * i // samples)
            h.update(f.read(chunk))
    return h.hexdigest()[:32]


@dataclass
class AdapterInfo:
    rank: int
    alpha: float
    targets: list[str]
    modules: list[str]
    base_variant: str = ""
    base_fingerprint: str = ""

    def to_metadata(self) -> dict[str, str]:
        values = {"format": ADAPTER_FORMAT, "rank": str(self.rank), "alpha": repr(self.alpha),
                  "targets": json.dumps(self.targets), "modules": json.dumps(self.modules),
                  "base_variant": self.base_variant, "base_fingerprint": self.base_fingerprint}
        return {META_PREFIX + k: v for k, v in values.items()}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str] | None, where: str = "") -> AdapterInfo:
        meta = {k[len(META_PREFIX):]: v for k, v in (meta or {}).items() if k.startswith(META_PREFIX)}
        if meta.get("format") != ADAPTER_FORMAT:
            raise ValueError(f"{where} is not an ovi LoRA adapter (no '{ADAPTER_FORMAT}' metadata); write one "
                             "with ovi.lora.save_adapter or a LoRA training run")
        return cls(int(meta["rank"]), float(meta["alpha"]), json.loads(meta["targets"]), json.loads(meta["modules"]),
                   meta.get("base_variant", ""), meta.get("base_fingerprint", ""))

    @property
    def spec(self) -> LoraSpec:
        return LoraSpec(rank=self.rank, alpha=self.alpha, targets=list(self.targets))


def save_adapter(model: nn.Module, path: str | Path, info: AdapterInfo, adapter: str = "default") -> Path:
    """Write the adapter alone (fp32 tensors + metadata) atomically."""
    state = {k: v.float().contiguous().cpu() for k, v in adapter_state(model, adapter).items()}
    if not state:
        raise ValueError(f"the model has no LoRA adapter {adapter!r}; inject one first (ovi.lora.inject_lora)")
    atomic_save_safetensors(state, Path(path), info)
    return Path(path)


def read_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], AdapterInfo]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA adapter {path} not found")
    with safe_open(str(path), "pt") as f:
        info = AdapterInfo.from_metadata(f.metadata(), str(path))
        return {k: f.get_tensor(k) for k in f.keys()}, info


def parse_adapter_arg(text: str) -> tuple[str, float]:
    """'PATH' or 'PATH:SCALE' (a Windows drive letter is not a scale) -> (path, scale)."""
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, 1.0


def load_adapters(model: nn.Module, adapters: list[tuple[str | Path, float]], base_fingerprint: str = "") -> list[str]:
    """Attach each (path, scale) as its own adapter, all active at once and none merged; returns their names.

    The adapted output of a Linear is ``W x + sum_i scale_i * alpha_i / r_i * B_i A_i x``.
    """
    names = []
    for i, (path, scale) in enumerate(adapters):
        state, info = read_adapter(path)
        if base_fingerprint and info.base_fingerprint and info.base_fingerprint != base_fingerprint:
            import logging

            logging.getLogger(__name__).warning(
                "LoRA %s was trained on another base (variant %r, fingerprint %s); loading it anyway", path,
                info.base_variant, info.base_fingerprint)
        name = f"adapter{i}"
        inject_lora(model, info.spec, name, info.modules)
        params = dict(model.named_parameters())
        for key, value in state.items():
            target = key.replace(".lora_A.weight", f".lora_A.{name}.weight").replace(
                ".lora_B.weight", f".lora_B.{name}.weight")
            if target not in params:
                raise ValueError(f"{path}: {key} has no module in this model (trained on another model config?)")
            with torch.no_grad():
                params[target].copy_(value)
        for layer in lora_layers(model):
            if name in layer.lora_A:
                layer.set_scale(name, scale)
        names.append(name)
    for layer in lora_layers(model):
        layer.set_adapter([n for n in names if n in layer.lora_A])
        layer.requires_grad_(False)
    return names


def merge_adapter(base: Mapping[str, torch.Tensor], adapter: Mapping[str, torch.Tensor], info: AdapterInfo,
                  scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Base state dict (release keys) + adapter -> merged state dict in the base's dtypes (sum done in fp32)."""
    merged = dict(base)
    factor = scale * info.alpha / info.rank
    for module in info.modules:
        a, b = adapter[f"{module}.lora_A.weight"].float(), adapter[f"{module}.lora_B.weight"].float()
        key = f"{module}.weight"
        if key not in merged:
            raise KeyError(f"the base has no {key}: the adapter was trained on another model")
        w = merged[key]
        merged[key] = (w.float() + factor * (b @ a)).to(w.dtype)
    return merged


def merge_adapter_file(base_path: str | Path, adapter_path: str | Path, out: str | Path, scale: float = 1.0) -> Path:
    """A release-format fusion file with one adapter merged in; the base's training metadata is kept."""
    from ovi.checkpoints import TrainingMetadata, save_fusion_checkpoint
    from safetensors.torch import load_file

    state, info = read_adapter(adapter_path)
    base = load_file(str(base_path))
    save_fusion_checkpoint(merge_adapter(base, state, info, scale), Path(out),
                           metadata=TrainingMetadata.read(base_path))
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    """python -m ovi.lora merge --base ovi.safetensors --adapter run/export/fusion_lora.safetensors[:0.8] --out m.safetensors"""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m ovi.lora", description="merge one LoRA adapter into a release file")
    ap.add_argument("command", choices=["merge"])
    ap.add_argument("--base", required=True, help="release-format fusion .safetensors")
    ap.add_argument("--adapter", required=True, help="adapter .safetensors, optionally PATH:SCALE")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    path, scale = parse_adapter_arg(args.adapter)
    print(merge_adapter_file(args.base, path, args.out, scale))


if __name__ == "__main__":
    main()
