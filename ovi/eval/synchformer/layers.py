"""Pieces both Synchformer feature extractors use: multi-head attention on split heads, and the CLS pooling
layer that turns a set of tokens (the patches of a frame, the frequency bins of a time step) into one vector.

Written here, not imported: no installed library ships Synchformer. Parameter names follow the released
checkpoint, which is why ``CLSPool`` is an ``nn.TransformerEncoderLayer`` (its keys: ``self_attn.in_proj_*``,
``linear1``, ``linear2``, ``norm1``, ``norm2``) with a ``cls_token`` beside them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, heads * d] -> [B, heads, N, d]."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, d] -> [B, N, heads * d]."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over the last two dims (no mask: every input here is a full segment)."""
    return F.scaled_dot_product_attention(q, k, v)


class CLSPool(nn.TransformerEncoderLayer):
    """A pre-norm encoder layer over [CLS, tokens]; returns the CLS output: [B, N, D] -> [B, D]."""

    def __init__(self, width: int, heads: int, ffn: int) -> None:
        super().__init__(d_model=width, nhead=heads, dim_feedforward=ffn, dropout=0.0, activation=nn.GELU(),
                         layer_norm_eps=1e-6, batch_first=True, norm_first=True)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return super().forward(x)[:, 0]


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (MotionFormer's block MLP; keys ``fc1``, ``fc2``)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))
