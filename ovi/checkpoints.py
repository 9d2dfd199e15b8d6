"""Checkpoint I/O for the fusion model in the released Ovi format (one safetensors file).

The released files hold the full FusionModel state_dict under its exact key names
(``video_model.blocks.0.self_attn.q.weight`` ...). We build the model on the meta device, read the
file tensor by tensor (casting as we go, so no second full copy is made), check every key and shape,
and load with ``assign=True`` so parameters take the file's storage directly.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ovi.config import FusionConfig
from ovi.fileio import atomic_path
from ovi.models.fusion import FusionModel
from ovi.state_dict_utils import StateDictMismatchError, check_state_dict

OVI_HUB_REPO = "chetwinlow1/Ovi"
FP8_HUB_REPO = "rkfg/Ovi-fp8_quantized"
# Released fusion files, by model variant (see configs/inference/).
RELEASE_FILES = {
    "720x720_5s": "model.safetensors",
    "960x960_5s": "model_960x960.safetensors",
    "960x960_10s": "model_960x960_10s.safetensors",
}
FP8_FILE = "model_fp8_e4m3fn.safetensors"  # community fp8 e4m3fn copy of the 720x720_5s weights
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
            f"checkpoint not found: {path}. Expected one of {sorted(RELEASE_FILES.values()) + [FP8_FILE]} "
            f"from {OVI_HUB_REPO}; `ovi-download` fetches them into checkpoints/Ovi/"
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
            f"Released files: {', '.join(f'{f} ({v})' for v, f in RELEASE_FILES.items())}, {FP8_FILE} "
            "(720x720_5s); check that the model config matches the file "
            "(configs/model/ovi_11b.yaml for the release)."))
    except StateDictMismatchError as e:
        raise CheckpointMismatchError(str(e)) from None
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def save_fusion_checkpoint(
    model_or_state: torch.nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the state_dict as one safetensors file in the release key format, atomically."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in state.items()}
    return atomic_save_safetensors(tensors, path)


def atomic_save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """save_file through a temp file: a crash never leaves a torn checkpoint."""
    with atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata={"format": "pt"})
    return Path(path)


def parameter_count(state: Mapping[str, torch.Tensor] | torch.nn.Module) -> int:
    items = state.state_dict() if isinstance(state, torch.nn.Module) else state
    return sum(math.prod(v.shape) for v in items.values())
