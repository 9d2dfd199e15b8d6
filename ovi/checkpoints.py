"""Checkpoint I/O for the fusion model in the released Ovi format (one safetensors file).

The released files hold the full FusionModel state_dict under its exact key names
(``video_model.blocks.0.self_attn.q.weight`` ...). We build the model on the meta device, read the
file tensor by tensor (casting as we go, so no second full copy is made), check every key and shape,
and load with ``assign=True`` so parameters take the file's storage directly.
"""
from __future__ import annotations

import math
from pathlib import Path
from dataclasses import dataclass, fields
from typing import ClassVar, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ovi.config import FusionConfig, fusion_config_from_yaml
from ovi.fileio import atomic_path
from ovi.models.fusion import FusionModel
from ovi.release import DEFAULT_ROOT, FP8_FUSION, FP8_REPO, FP8_VARIANT, FUSION, LOCAL_DIRS, OVI_REPO
from ovi.state_dict_utils import StateDictMismatchError, check_state_dict

_FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


class CheckpointMismatchError(StateDictMismatchError):
    """A fusion file's keys or shapes do not match the model being loaded."""


def build_fusion_model(cfg: FusionConfig, device: str | torch.device = "meta") -> FusionModel:
    """The model without initialising weights; on ``meta`` it costs no memory."""
    with torch.device(device):
        return FusionModel(cfg, init=False)


def expected_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def read_safetensors(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Read a safetensors file; fp8 tensors are upcast (to ``dtype`` or bfloat16), others cast to ``dtype``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path}. Expected one of {[h.name for h in FUSION.values()] + [FP8_FUSION.name]} "
            f"from {OVI_REPO} / {FP8_REPO}; `ovi-download` fetches them into {DEFAULT_ROOT}/{LOCAL_DIRS[OVI_REPO]}/"
        )
    out = {}
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        for key in f.keys():
            t = f.get_tensor(key)
            if t.dtype in _FP8_DTYPES:
                t = t.to(dtype or torch.bfloat16)
            elif dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            out[key] = t
    return out


def load_fusion_checkpoint(
    path: str | Path,
    cfg: FusionConfig,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.bfloat16,
) -> FusionModel:
    """Build the model on meta and load a released fusion file strictly (fp8 files are upcast)."""
    model = build_fusion_model(cfg)
    state = read_safetensors(path, device, dtype)
    try:
        check_state_dict(expected_shapes(model), state, source=str(path), hint=(
            f"Released files: {', '.join(f'{h.name} ({v})' for v, h in FUSION.items())}, {FP8_FUSION.name} "
            f"({FP8_VARIANT}); check that the model config matches the file "
            "(configs/model/ovi_11b.yaml for the release)."))
    except StateDictMismatchError as e:
        raise CheckpointMismatchError(str(e)) from None
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


@dataclass(frozen=True)
class TrainingMetadata:
    """What a trained export records about itself (safetensors metadata, keys ``ovi.<field>``), so the
    pipeline samples it as it was trained without hand overrides. Released files carry none of it."""

    stage: str | None = None  # audio_pretrain | audio_finetune | fusion
    model_config: str | None = None  # FusionConfig as YAML (ovi.config.to_yaml)
    num_frames: int | None = None  # clip length trained on: the geometry follows (121 -> 157 audio latents)
    prompt_style: str | None = None  # caption spelling trained on (ovi.prompts.PROMPT_STYLES)

    PREFIX: ClassVar[str] = "ovi."

    def to_metadata(self) -> dict[str, str]:
        return {self.PREFIX + f.name: str(v) for f in fields(self) if (v := getattr(self, f.name)) is not None}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str] | None) -> TrainingMetadata:
        found = {k[len(cls.PREFIX):]: v for k, v in (metadata or {}).items() if k.startswith(cls.PREFIX)}
        num_frames = found.get("num_frames")
        return cls(stage=found.get("stage"), model_config=found.get("model_config"),
                   num_frames=int(num_frames) if num_frames is not None else None,
                   prompt_style=found.get("prompt_style"))

    @classmethod
    def read(cls, path: str | Path) -> TrainingMetadata:
        """The metadata of a safetensors file (header only; empty for the released files)."""
        with safe_open(str(path), framework="pt") as f:
            return cls.from_metadata(f.metadata())

    def fusion_config(self) -> FusionConfig | None:
        return None if self.model_config is None else fusion_config_from_yaml(self.model_config)


def save_fusion_checkpoint(
    model_or_state: torch.nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    dtype: torch.dtype | None = None,
    metadata: TrainingMetadata | None = None,
) -> Path:
    """Write the state_dict as one safetensors file in the release key format, atomically."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in state.items()}
    return atomic_save_safetensors(tensors, path, metadata)


def atomic_save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: TrainingMetadata | None = None
) -> Path:
    """save_file through a temp file: a crash never leaves a torn checkpoint."""
    header = {"format": "pt"} | (metadata.to_metadata() if metadata is not None else {})
    with atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=header)
    return Path(path)


def parameter_count(state: Mapping[str, torch.Tensor] | torch.nn.Module) -> int:
    items = state.state_dict() if isinstance(state, torch.nn.Module) else state
    return sum(math.prod(v.shape) for v in items.values())
