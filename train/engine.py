"""Distributed set-up and the DeepSpeed engine: process group, device, the ZeRO config, optimizer, schedule.

The DeepSpeed JSON under ``configs/train/deepspeed/`` holds the ZeRO settings; everything the trainer config
already defines (micro-batch, accumulation, clipping, precision) is filled in from it, so there is one source
of truth. Keys the trainer fills must be absent or ``"auto"`` in the JSON.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from train.config import OptimConfig, TrainConfig
from train.params import optimizer_groups

log = logging.getLogger(__name__)

FILLED_KEYS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping", "bf16", "fp16")
QUIET_STEPS_PER_PRINT = 10**9  # the trainer logs; DeepSpeed's own step prints stay off


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(backend: str = "auto", cpu_shm_comm: bool = False) -> DistInfo:
    """Join the process group started by torchrun / deepspeed, or make a one-process group for a plain run."""
    if "RANK" not in os.environ:  # plain `python -m train.cli`: a world of one
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    cuda = torch.cuda.is_available()
    if not cuda:
        # DeepSpeed picks its accelerator at import; without this it may probe for CUDA and fail.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    if not cpu_shm_comm and not cuda:
        # The CPU accelerator JIT-builds a shared-memory allreduce on first init (~80 s). `sys.modules` is needed:
        # `deepspeed.comm.torch` as an attribute is the torch package (deepspeed.comm star-imports torch).
        ds_comm_torch = sys.modules.get("deepspeed.comm.torch")
        if ds_comm_torch is not None and hasattr(ds_comm_torch, "build_shm_op"):
            ds_comm_torch.build_shm_op = lambda: None
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    deepspeed.init_distributed(dist_backend=backend)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistInfo(rank, world, local_rank, device)


def deepspeed_config(cfg: TrainConfig, world_size: int, load_universal: bool = False) -> dict[str, Any]:
    """The DeepSpeed JSON with the trainer's values filled in; ``load_universal`` to resume on another world size."""
    path = Path(cfg.engine.deepspeed_config)
    if not path.is_file():
        raise FileNotFoundError(f"engine.deepspeed_config: {path} not found (see configs/train/deepspeed/)")
    ds = json.loads(path.read_text())
    for key in FILLED_KEYS:
        if key in ds and ds[key] != "auto":
            raise ValueError(
                f"{path}: '{key}' is set from the trainer config (data.batch_size, engine.*, optim.grad_clip); "
                "remove it from the DeepSpeed JSON or set it to \"auto\""
            )
    accum = cfg.engine.gradient_accumulation_steps
    ds.update(
        train_micro_batch_size_per_gpu=cfg.data.batch_size,
        gradient_accumulation_steps=accum,
        train_batch_size=cfg.data.batch_size * accum * world_size,
        gradient_clipping=cfg.optim.grad_clip,
        bf16={"enabled": cfg.engine.precision == "bf16"},
        steps_per_print=QUIET_STEPS_PER_PRINT,
    )
    ds.pop("fp16", None)
    ds.setdefault("zero_optimization", {"stage": 0})
    if cfg.engine.precision == "bf16" and cfg.engine.grad_reduce_dtype == "fp32":
        # Reduce-scatter/all-reduce and accumulate gradients in fp32 instead of DeepSpeed's bf16 default.
        ds["communication_data_type"] = "fp32"
        ds["data_types"] = {**ds.get("data_types", {}), "grad_accum_dtype": "fp32"}
    if load_universal:
        ds["checkpoint"] = {**ds.get("checkpoint", {}), "load_universal": True}
    return ds


def zero_stage(ds: dict[str, Any]) -> int:
    return int(ds.get("zero_optimization", {}).get("stage", 0))


def lr_lambda(cfg: OptimConfig, max_steps: int):
    """Linear warm-up to 1, then constant, cosine or linear decay to ``min_lr_ratio`` at ``max_steps``."""

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
        decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1.0 - progress
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay

    return f


def build_engine(model: nn.Module, cfg: TrainConfig, dist_info: DistInfo, ds_config: dict[str, Any] | None = None):
    """Wrap ``model`` (requires_grad already set) in a DeepSpeed engine with a client torch AdamW."""
    import deepspeed

    o = cfg.optim
    optimizer = torch.optim.AdamW(
        optimizer_groups(model, o.weight_decay),
        lr=o.lr,
        betas=(o.betas[0], o.betas[1]),
        eps=o.eps,
        weight_decay=o.weight_decay,
        fused=o.fused or None,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(o, cfg.max_steps))
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=ds_config or deepspeed_config(cfg, dist_info.world_size),
    )
    return engine
