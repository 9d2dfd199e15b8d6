"""Throughput and MFU estimates, and the metric sinks (jsonl always, TensorBoard by default, W&B optional)."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ovi.config import TowerConfig
from ovi.models.tower import Tower
from train.params import full_ndim

log = logging.getLogger(__name__)

# Dense bf16 peak TFLOP/s per device (vendor datasheets, without sparsity), matched by device-name substring.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "B200": 2250.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
METRICS_FILE = "metrics.jsonl"


def detect_peak_tflops() -> Optional[float]:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


@dataclass
class TowerFlops:
    """Multiply-accumulates of one tower's weights for one sample, per token of the stream each weight acts on,
    split into forward, input-gradient and weight-gradient work (which depends on what is frozen)."""

    dim: int
    layers: int
    text_len: int
    # stream -> [forward, input-grad, weight-grad] MACs per token; streams: "self" (the tower's tokens),
    # "text" (the padded text), "other" (the other tower's tokens, fusion k/v), "once" (per sample: time MLPs)
    macs: dict[str, list[float]]

    def linear_flops(self, tokens: int, other_tokens: int) -> float:
        counts = {"self": tokens, "text": self.text_len, "other": other_tokens, "once": 1}
        return 2.0 * sum(sum(m) * counts[s] for s, m in self.macs.items())

    def attention_flops(self, tokens: int, other_tokens: int) -> float:
        # QK^T and PV: 2 MACs per (query, key, channel) for self, text and cross-modal attention; x3 for backward.
        return 2.0 * 3 * 2 * self.layers * self.dim * tokens * (tokens + self.text_len + other_tokens)

    def train_flops(self, tokens: int, other_tokens: int) -> float:
        """Forward + backward FLOPs for one sample with ``tokens`` true (unpadded) latent tokens."""
        return self.linear_flops(tokens, other_tokens) + self.attention_flops(tokens, other_tokens)


def _stream(name: str) -> str:
    if Tower.is_cross_modal(name):
        return "other"
    if name.startswith(("time_embedding", "time_projection")):
        return "once"  # the tower embeds each distinct timestep once, not per token
    if name.startswith("text_embedding") or re.search(r"cross_attn\.[kv]\.", name):
        return "text"
    return "self"


def tower_flops(tower: nn.Module, cfg: TowerConfig) -> TowerFlops:
    """Backward work follows autograd: weight gradients only for trainable weights; input gradients only where
    something trainable lies upstream (never for the embeddings of data, text and time unless they train)."""
    named = [(n, p) for n, p in tower.named_parameters() if full_ndim(p) >= 2]  # 1-D norms/biases: negligible
    trains = lambda prefix: any(p.requires_grad for n, p in named if n.startswith(prefix))  # noqa: E731
    patch_trains, text_trains = trains("patch_embedding"), trains("text_embedding")
    first_patch = named[0][0] if named and named[0][0].startswith("patch_embedding") else None
    out = TowerFlops(dim=cfg.dim, layers=cfg.num_layers, text_len=cfg.text_len,
                     macs={s: [0.0, 0.0, 0.0] for s in ("self", "text", "other", "once")})
    for name, p in named:
        numel = p.ds_numel if hasattr(p, "ds_numel") else p.numel()  # ZeRO-3 partitions p in place
        stream = _stream(name)
        if name.startswith("patch_embedding"):
            input_grad = patch_trains and name != first_patch
        elif stream == "text":
            input_grad = text_trains and not name.startswith("text_embedding.0")
        else:
            input_grad = stream != "once"
        m = out.macs[stream]
        m[0] += numel
        m[1] += numel if input_grad else 0.0
        m[2] += numel if p.requires_grad else 0.0
    return out


class MetricsSink:
    """Rank 0 only: one JSON line per logged step, plus TensorBoard and W&B when enabled."""

    def __init__(self, run_dir: Path, tensorboard: bool, wandb_cfg: Optional[dict], config: dict):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(run_dir / METRICS_FILE, "a")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("logging.tensorboard needs `pip install tensorboard` (or set it to false)") from e
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        self.wandb = None
        if wandb_cfg is not None:
            try:
                import wandb
            except ImportError as e:
                raise ImportError("logging.wandb needs `pip install wandb` (or set it to false)") from e
            self.wandb = wandb.init(config=config, dir=str(run_dir), **wandb_cfg)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
