"""Build the model a stage trains and load its starting weights.

- audio_pretrain: a standalone audio ``Tower`` with the reference initialisation (from scratch), or any
  audio tower given by ``init.audio_tower``.
- audio_finetune: the same tower, from ``init.audio_tower`` (the stage-1 export).
- fusion: ``FusionModel`` with the reference initialisation (fusion layers xavier, the video tower's /10), then
  ``init.video_tower`` (Wan2.2-TI2V-5B DiT) and ``init.audio_tower`` (stage 1) over it, leaving the
  cross-modal layers fresh; or ``init.fusion`` (a released Ovi file) for everything.

Files are read tensor by tensor and copied straight into the parameters, so loading needs no second copy of the
model. Keys and shapes are checked from the file headers against a meta-device model before anything is built
(``init_plans``; the trainer's preflight runs the same check). Under ZeRO-3 the model is built partitioned
(``deepspeed.zero.Init``) and rank 0 alone reads the files. Wan2.2 DiT names equal a tower's names.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import logging
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.distributed as dist
from safetensors import safe_open
from torch import nn

from ovi.config import FusionConfig
from ovi.models.fusion import VIDEO_FUSION_INIT_SCALE, FusionModel, init_tower_weights
from ovi.models.tower import Tower
from ovi.state_dict_utils import mismatch_report
from train.config import AUDIO_STAGES, TrainConfig

log = logging.getLogger(__name__)

TOWER_PREFIXES = {"video": "video_model.", "audio": "audio_model."}
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


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


def module_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes by state-dict name (a ZeRO-3 partitioned parameter reports its full shape)."""
    out = {n: tuple(getattr(p, "ds_shape", p.shape)) for n, p in module.named_parameters()}
    out.update({n: tuple(b.shape) for n, b in module.named_buffers() if n in module.state_dict()})
    return out


def plan_weights(
    expected: dict[str, tuple[int, ...]],
    path: str | Path,
    *,
    prefix: str = "",
    keep_fresh: Callable[[str], bool] = lambda k: False,
    what: str,
) -> dict[str, tuple[Path, str]]:
    """Which file and key fills each name of ``expected`` (names without ``prefix``), from headers only.

    Every name must be in the file unless ``keep_fresh(name)``; file keys the module lacks are errors, except
    cross-modal keys when the module has none (taking a standalone tower out of a fusion file).
    """
    found = tensor_locations(path)
    stripped = bool(prefix) and any(k.startswith(prefix) for k in found)
    if stripped:
        found = {k[len(prefix) :]: v for k, v in found.items() if k.startswith(prefix)}
    elif prefix and any(k.startswith(p) for k in found for p in TOWER_PREFIXES.values()):
        raise ValueError(f"{path} holds a fusion model; {what} needs the {prefix!r} part and it has none")
    found = {k: v for k, v in found.items() if k in expected or not Tower.is_cross_modal(k)}
    check_expected = {k: s for k, s in expected.items() if k in found or not keep_fresh(k)}
    report = mismatch_report(check_expected, {k: s for k, (_, s) in found.items()})
    if report:
        raise ValueError(f"{what}: {path} does not fit the configured model ({report}); check the model config")
    return {k: (f, prefix + k if stripped else k) for k, (f, _) in found.items()}


def load_weights(
    module: nn.Module,
    path: str | Path,
    *,
    prefix: str = "",
    keep_fresh: Callable[[str], bool] = lambda k: False,
    what: str,
) -> int:
    """Copy the tensors of ``path`` (its keys under ``prefix``, if the file has them) into ``module``.

    Returns the number of tensors loaded. See ``plan_weights`` for what must match.
    """
    plan = plan_weights(module_shapes(module), path, prefix=prefix, keep_fresh=keep_fresh, what=what)
    copy_planned(module, plan)
    log.info("%s: loaded %d tensors from %s", what, len(plan), path)
    return len(plan)


def copy_planned(module: nn.Module, plan: dict[str, tuple[Path, str]]) -> None:
    """Copy file tensors into ``module`` one at a time (no second copy of the model).

    A ZeRO-3 partitioned parameter is gathered alone, filled by rank 0 (the only reader of the file) and
    re-partitioned, so no rank ever holds more than its shard plus one tensor.
    """
    params = dict(module.named_parameters())
    state = module.state_dict()
    by_file: dict[Path, list[str]] = {}
    for name, (f, _) in plan.items():
        by_file.setdefault(f, []).append(name)
    partitioned = any(hasattr(p, "ds_id") for p in params.values())
    rank = dist.get_rank() if partitioned else 0
    if partitioned:
        import deepspeed
    with torch.no_grad():
        for f, names in by_file.items():
            with safe_open(str(f), "pt") as st:  # memory-maps the file; only the tensors asked for are read
                for name in names:
                    p = params.get(name)
                    if p is not None and hasattr(p, "ds_id"):
                        with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
                            if rank == 0:
                                p.data.copy_(st.get_tensor(plan[name][1]))
                    else:  # buffers and unpartitioned parameters: every rank
                        state[name].copy_(st.get_tensor(plan[name][1]))


def stage_module(cfg: TrainConfig, model_cfg: FusionConfig, init: bool) -> nn.Module:
    """The stage's bare model: a standalone audio tower, or the fusion model (reference init when ``init``)."""
    if cfg.stage in AUDIO_STAGES:
        tower = Tower(model_cfg.audio, fusion=False)
        if init:
            init_tower_weights(tower)
        return tower
    return FusionModel(model_cfg, init=init)


def meta_model(cfg: TrainConfig, model_cfg: FusionConfig) -> nn.Module:
    """The stage's model on the meta device: every name and shape, no memory, built in about a second."""
    with torch.device("meta"):
        return stage_module(cfg, model_cfg, init=False)


def init_plans(cfg: TrainConfig, expected: dict[str, tuple[int, ...]]) -> dict[str, tuple[Path, str]]:
    """Model name -> (file, key) for every tensor the stage takes from ``init.*`` (headers only).

    Raises ValueError naming the key to set when the stage's required init files are not configured.
    """
    init = cfg.init
    if cfg.stage in AUDIO_STAGES:
        if init.audio_tower:
            return plan_weights(expected, init.audio_tower, prefix=TOWER_PREFIXES["audio"], what="init.audio_tower")
        if cfg.stage == "audio_finetune":
            raise ValueError("audio_finetune starts from the stage-1 audio tower: set init.audio_tower")
        return {}
    if init.fusion:
        return plan_weights(expected, init.fusion, what="init.fusion")
    if not (init.video_tower and init.audio_tower):
        raise ValueError(
            "fusion needs init.video_tower (Wan2.2-TI2V-5B DiT) and init.audio_tower (stage-1 export), "
            "or init.fusion (a released Ovi file)"
        )
    plan: dict[str, tuple[Path, str]] = {}
    for side, path in (("video", init.video_tower), ("audio", init.audio_tower)):
        head = f"{side}_model."
        tower_shapes = {k[len(head) :]: s for k, s in expected.items() if k.startswith(head)}
        part = plan_weights(tower_shapes, path, prefix=TOWER_PREFIXES[side], keep_fresh=Tower.is_cross_modal,
                            what=f"init.{side}_tower")
        plan.update({head + k: v for k, v in part.items()})
    return plan


def _init_fresh_partitioned(model: nn.Module, fresh: set[str]) -> None:
    """Reference init under ZeRO-3 of the parameters no init file fills.

    Only the fresh cross-modal layers (fusion from two towers): gathered one layer at a time, with the rule of
    ``FusionModel.init_weights`` for them (xavier, zero bias, the video tower's scaled). Anything else fresh
    (a tower from scratch): that tower is gathered whole while ``init_tower_weights`` runs, which is the peak.
    """
    import deepspeed

    rank = dist.get_rank()
    towers = [(n, m) for n, m in model.named_modules() if isinstance(m, Tower)]
    for tower_name, tower in towers:
        head = f"{tower_name}." if tower_name else ""
        mine = {n for n in fresh if n.startswith(head)}
        if not mine:
            continue
        if all(Tower.is_cross_modal(n) for n in mine):
            for name, m in tower.named_modules():
                if isinstance(m, nn.Linear) and Tower.is_cross_modal(name):
                    with deepspeed.zero.GatheredParameters(list(m.parameters()), modifier_rank=0), torch.no_grad():
                        if rank == 0:
                            nn.init.xavier_uniform_(m.weight)
                            nn.init.zeros_(m.bias)
                            if tower_name == "video_model":
                                m.weight.mul_(VIDEO_FUSION_INIT_SCALE)
        else:
            with deepspeed.zero.GatheredParameters(list(tower.parameters()), modifier_rank=0):
                if rank == 0:
                    init_tower_weights(tower)


def release_freed_host_memory() -> None:
    """Make glibc return every freed buffer of 1 MiB or more to the OS at once.

    Its default threshold grows to the size of the largest buffer freed so far, after which freed layers stay on
    the heap: a ZeRO-3 build, which makes each layer whole and then keeps only its shard, would look (and be,
    until trimmed) as large as an unpartitioned one on some ranks. No-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass


def build_model(cfg: TrainConfig, model_cfg: FusionConfig, ds_config: Optional[dict] = None) -> nn.Module:
    """The stage's model with its starting weights, parameters in the training precision.

    With a ZeRO-3 ``ds_config`` the model is built under ``deepspeed.zero.Init``: each parameter is partitioned
    as soon as its layer exists, so a rank holds 1/world of the model (plus one layer while it is made), and init
    files are read by rank 0 one tensor at a time. Otherwise every rank builds the whole model (ZeRO-0/1/2 keep
    full weights on every rank anyway).
    """
    dtype = torch.bfloat16 if cfg.engine.precision == "bf16" else torch.float32
    plan = init_plans(cfg, module_shapes(meta_model(cfg, model_cfg)))
    zero3 = bool(ds_config) and ds_config.get("zero_optimization", {}).get("stage", 0) == 3
    if zero3:
        import deepspeed

        release_freed_host_memory()
        # dtype comes from ds_config's bf16 flag (DeepSpeed 0.19 ignores an explicit dtype off-GPU); torch's own
        # linear, not DeepSpeed's replacement, keeps the numerics of the other paths.
        with deepspeed.zero.Init(config_dict_or_path=ds_config, mem_efficient_linear=False):
            model = stage_module(cfg, model_cfg, init=False)
        _init_fresh_partitioned(model, {n for n, _ in model.named_parameters()} - set(plan))
    else:
        with default_dtype(dtype):
            model = stage_module(cfg, model_cfg, init=True)  # reference init, then the files over it
    copy_planned(model, plan)
    for what in sorted({f for f, _ in plan.values()}):
        log.info("loaded weights from %s", what)
    log.info("model built (%s): %d tensors from init files", "ZeRO-3 partitioned" if zero3 else "full", len(plan))
    model.gradient_checkpointing = cfg.engine.activation_checkpointing
    return model
