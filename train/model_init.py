"""Build the model a stage trains and load its starting weights.

- audio_pretrain: a standalone audio ``Tower`` with the reference initialisation (from scratch), or any
  audio tower given by ``init.audio_tower``.
- audio_finetune: the same tower, from ``init.audio_tower`` (the stage-1 export).
- fusion: ``FusionModel`` with the reference initialisation (fusion layers xavier, the video tower's /10), then
  ``init.video_tower`` (Wan2.2-TI2V-5B DiT) and ``init.audio_tower`` (stage 1) over it, leaving the
  cross-modal layers fresh; or ``init.fusion`` (a released Ovi file) for everything.

Files are read tensor by tensor and copied straight into the parameters, so loading needs no second copy of the
model. Keys and shapes are checked before anything is copied. Wan2.2 DiT names equal a tower's names.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors import safe_open
from torch import nn

from ovi.config import FusionConfig
from ovi.models.fusion import FusionModel, init_tower_weights
from ovi.models.tower import Tower
from ovi.state_dict_utils import mismatch_report
from train.config import AUDIO_STAGES, TrainConfig

log = logging.getLogger(__name__)

TOWER_PREFIXES = {"video": "video_model.", "audio": "audio_model."}


def is_fusion_key(name: str) -> bool:
    """The cross-modal layers (k/v_fusion, norm_k_fusion, pre_attn_norm_fusion) inside each cross_attn."""
    return "_fusion." in name


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build parameters directly in ``dtype`` (bf16 halves the host memory of an 11B model)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def safetensors_files(path: str | Path) -> list[Path]:
    """One file, or every shard of a folder (Wan's ``diffusion_pytorch_model-0000k-of-0000n.safetensors``)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(
            f"weights not found: {p}. init.video_tower takes Wan2.2-TI2V-5B's DiT folder (`huggingface-cli download "
            "Wan-AI/Wan2.2-TI2V-5B --local-dir checkpoints/Wan2.2-TI2V-5B`), init.audio_tower a stage-1/2 export, "
            "init.fusion a released Ovi file (`ovi-download`)"
        )
    index = sorted(p.glob("*.safetensors.index.json"))
    if index:
        weight_map = json.loads(index[0].read_text())["weight_map"]
        return [p / name for name in sorted(set(weight_map.values()))]
    files = sorted(p.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {p}")
    return files


def tensor_locations(path: str | Path) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """key -> (file, shape), read from the headers only."""
    out: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for f in safetensors_files(path):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                out[k] = (f, tuple(st.get_slice(k).get_shape()))
    return out


def load_weights(
    module: nn.Module,
    path: str | Path,
    *,
    prefix: str = "",
    keep_fresh: Callable[[str], bool] = lambda k: False,
    what: str,
) -> int:
    """Copy the tensors of ``path`` (its keys under ``prefix``, if the file has them) into ``module``.

    Every parameter must be in the file unless ``keep_fresh(name)``; file keys the module lacks are errors,
    except cross-modal keys when the module has none (taking a standalone tower out of a fusion file).
    Returns the number of tensors loaded.
    """
    found = tensor_locations(path)
    stripped = bool(prefix) and any(k.startswith(prefix) for k in found)
    if stripped:
        found = {k[len(prefix) :]: v for k, v in found.items() if k.startswith(prefix)}
    elif prefix and any(k.startswith(p) for k in found for p in TOWER_PREFIXES.values()):
        raise ValueError(f"{path} holds a fusion model; {what} needs the {prefix!r} part and it has none")
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: v for k, v in found.items() if k in expected or not is_fusion_key(k)}
    check_expected = {k: s for k, s in expected.items() if k in found or not keep_fresh(k)}
    report = mismatch_report(check_expected, {k: s for k, (_, s) in found.items()})
    if report:
        raise ValueError(f"{what}: {path} does not fit the configured model ({report}); check the model config")
    params = module.state_dict()
    by_file: dict[Path, list[str]] = {}
    for k, (f, _) in found.items():
        by_file.setdefault(f, []).append(k)
    with torch.no_grad():
        for f, keys in by_file.items():
            with safe_open(str(f), "pt") as st:
                for k in keys:
                    params[k].copy_(st.get_tensor(prefix + k if stripped else k))
    log.info("%s: loaded %d tensors from %s", what, len(found), path)
    return len(found)


def build_model(cfg: TrainConfig, model_cfg: FusionConfig) -> nn.Module:
    """The stage's model with its starting weights, parameters in the training precision."""
    dtype = torch.bfloat16 if cfg.engine.precision == "bf16" else torch.float32
    init = cfg.init
    with default_dtype(dtype):
        if cfg.stage in AUDIO_STAGES:
            model: nn.Module = Tower(model_cfg.audio, fusion=False)
            init_tower_weights(model)
        else:
            model = FusionModel(model_cfg)  # reference init, including the fresh cross-modal layers
    if cfg.stage in AUDIO_STAGES:
        if init.audio_tower:
            load_weights(model, init.audio_tower, prefix=TOWER_PREFIXES["audio"], what="init.audio_tower")
        elif cfg.stage == "audio_finetune":
            raise ValueError("audio_finetune starts from the stage-1 audio tower: set init.audio_tower")
    elif init.fusion:
        load_weights(model, init.fusion, what="init.fusion")
    else:
        if not (init.video_tower and init.audio_tower):
            raise ValueError(
                "fusion needs init.video_tower (Wan2.2-TI2V-5B DiT) and init.audio_tower (stage-1 export), "
                "or init.fusion (a released Ovi file)"
            )
        for side, path in (("video", init.video_tower), ("audio", init.audio_tower)):
            tower = getattr(model, f"{side}_model")
            load_weights(tower, path, prefix=TOWER_PREFIXES[side], keep_fresh=is_fusion_key, what=f"init.{side}_tower")
    model.gradient_checkpointing = cfg.engine.activation_checkpointing
    return model
