"""Synchformer's audio feature extractor: AST (Audio Spectrogram Transformer) on one segment's log-mel, then a
CLS pooling layer over the frequency patches of each time step.

    log-mel [BS, 66 frames, 128 bins] -> 16x16 patches every 10 -> [BS, 12*6, D] (+ CLS, distillation token)
    -> 12 pre-norm layers -> LayerNorm -> per time step, pool its 12 frequency patches -> [BS, 6, D]

Hand-written: transformers' ASTModel computes the same network, but since transformers 5 its parameters are
named ``layers.N.attention.q_proj`` / ``mlp.fc1`` while the released checkpoint uses the 4.x names
(``encoder.layer.N.attention.attention.query``, ``intermediate.dense``), and the position table is the one cut
to 74 rows for 66-frame inputs. The ``ModuleDict`` nesting below exists only to reproduce those names.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovi.eval.synchformer.config import SynchformerConfig
from ovi.eval.synchformer.layers import CLSPool, attend, merge_heads, split_heads

AST_LN_EPS = 1e-12  # AST's (transformers ASTConfig) layer-norm epsilon


def _linear(width: int, out: int | None = None) -> nn.Linear:
    return nn.Linear(width, out or width)


class ASTLayer(nn.Module):
    """x + attn(LN(x)), then x + MLP(LN(x)); exact GELU."""

    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.attention = nn.ModuleDict({
            "attention": nn.ModuleDict({"query": _linear(width), "key": _linear(width), "value": _linear(width)}),
            "output": nn.ModuleDict({"dense": _linear(width)}),
        })
        self.intermediate = nn.ModuleDict({"dense": _linear(width, hidden)})
        self.output = nn.ModuleDict({"dense": _linear(hidden, width)})
        self.layernorm_before = nn.LayerNorm(width, eps=AST_LN_EPS)
        self.layernorm_after = nn.LayerNorm(width, eps=AST_LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, qkv = self.layernorm_before(x), self.attention["attention"]
        q, k, v = (split_heads(qkv[name](h), self.heads) for name in ("query", "key", "value"))
        x = x + self.attention["output"]["dense"](merge_heads(attend(q, k, v)))
        return x + self.output["dense"](F.gelu(self.intermediate["dense"](self.layernorm_after(x))))


class ASTEmbeddings(nn.Module):
    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        d, f, t = cfg.width, *cfg.audio_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, d))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 2 + f * t, d))
        self.patch_embeddings = nn.ModuleDict(
            {"projection": nn.Conv2d(1, d, cfg.patch, stride=cfg.audio_stride)})

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """spec: [BS, T frames, F bins] -> [BS, 2 + f*t, D] (patches frequency-major)."""
        patches = self.patch_embeddings["projection"](spec.transpose(1, 2)[:, None])  # [BS, D, f, t]
        patches = patches.flatten(2).transpose(1, 2)
        b = patches.shape[0]
        aux = torch.cat([self.cls_token, self.distillation_token], dim=1).expand(b, -1, -1)
        return torch.cat([aux, patches], dim=1) + self.position_embeddings


class AST(nn.Module):
    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        self.embeddings = ASTEmbeddings(cfg)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(
            ASTLayer(cfg.width, cfg.audio_heads, cfg.mlp_ratio * cfg.width) for _ in range(cfg.audio_depth))})
        self.layernorm = nn.LayerNorm(cfg.width, eps=AST_LN_EPS)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(spec)
        for layer in self.encoder["layer"]:
            x = layer(x)
        return self.layernorm(x)


class AudioFeatures(nn.Module):
    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        self.grid = cfg.audio_grid
        self.ast = AST(cfg)
        self.freq_attn_agg = CLSPool(cfg.width, cfg.audio_heads, cfg.mlp_ratio * cfg.width)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """spec: [BS, T frames, F bins] (normalised log-mel) -> [BS, t, D]."""
        x = self.ast(spec)[:, 2:]  # drop CLS and distillation outputs: [BS, f*t, D]
        bs, _, d = x.shape
        f, t = self.grid
        x = x.view(bs, f, t, d).transpose(1, 2).reshape(bs * t, f, d)  # each time step's frequency patches
        return self.freq_attn_agg(x).view(bs, t, d)
