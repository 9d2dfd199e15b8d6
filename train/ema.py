"""Exponential moving average of the trainable weights, in fp32, sharded over ranks and checkpointed.

    after each optimizer step: ema <- decay * ema + (1 - decay) * weight      (fp32, this rank's share)
    checkpoint: ema_rank{r}.pt per rank  --full_ema()-->  {name: fp32 tensor}  (export, resume elsewhere)

Each rank averages only its share, so the EMA costs 4 bytes per trainable parameter / world size:
- ZeRO-0/1/2 (every rank holds the whole module): parameter i belongs to rank i % world;
- ZeRO-3 (a rank holds a flat partition of every parameter, ``p.ds_tensor``): each rank averages its partitions.
A share records how to rebuild the full tensor, so export and a resume on another world size read all shares.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


def ema_file(rank: int) -> str:
    return f"ema_rank{rank:05d}.pt"


@dataclass
class Share:
    """One rank's part of one parameter: the whole tensor (ZeRO-0..2) or flat partition ``index`` of ``parts``."""

    value: torch.Tensor  # fp32
    shape: tuple[int, ...]
    index: int = 0
    parts: int = 1


class Ema:
    def __init__(self, model: nn.Module, decay: float, rank: int, world: int) -> None:
        self.decay, self.rank, self.world = decay, rank, world
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shares: dict[str, Share] = {}
        for i, (name, p) in enumerate(sorted(self.params.items())):
            if hasattr(p, "ds_tensor"):  # ZeRO-3: this rank's flat partition
                self.shares[name] = Share(p.ds_tensor.detach().float().clone(), tuple(p.ds_shape), rank, world)
            elif i % world == rank:
                self.shares[name] = Share(p.detach().float().clone(), tuple(p.shape))

    @torch.no_grad()
    def update(self) -> None:
        for name, share in self.shares.items():
            p = self.params[name]
            current = p.ds_tensor if hasattr(p, "ds_tensor") else p
            share.value.lerp_(current.detach().float(), 1.0 - self.decay)  # ema + (1 - d) * (w - ema)

    def state(self) -> dict:
        return {"decay": self.decay, "shares": {n: s.__dict__ for n, s in self.shares.items()}}

    def load(self, checkpoint: Path) -> None:
        """Restore this rank's shares from a checkpoint written by any number of ranks."""
        full = full_ema(checkpoint)
        missing = sorted(set(self.shares) - set(full))
        if missing:
            raise RuntimeError(f"{checkpoint} has no EMA of {missing[:3]} ({len(missing)} in all): it was trained "
                               "with other trainable parameters; set ema.decay=0 or start a new run")
        for name, share in self.shares.items():
            if share.parts == 1:
                share.value.copy_(full[name])
            else:
                flat = full[name].flatten()
                size = share.value.numel()
                part = flat[share.index * size: (share.index + 1) * size]
                share.value.zero_()[: part.numel()].copy_(part)  # the last partition is padded


def full_ema(checkpoint: Path) -> dict[str, torch.Tensor]:
    """{name: fp32 tensor} from every rank's EMA file in a committed checkpoint folder ({} when there is none)."""
    pieces: dict[str, list[Share]] = {}
    for path in sorted(Path(checkpoint).glob("ema_rank*.pt")):
        for name, raw in torch.load(path, map_location="cpu", weights_only=False)["shares"].items():
            pieces.setdefault(name, []).append(Share(**raw))
    out = {}
    for name, shares in pieces.items():
        shares.sort(key=lambda s: s.index)
        shape = shares[0].shape
        if shares[0].parts == 1:
            out[name] = shares[0].value.reshape(shape)
        else:
            numel = int(torch.Size(shape).numel())
            out[name] = torch.cat([s.value.flatten() for s in shares])[:numel].reshape(shape)
    return out
