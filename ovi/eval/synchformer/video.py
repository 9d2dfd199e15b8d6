"""Synchformer's video feature extractor: MotionFormer (a ViT-B/16 with divided space-time attention on
2-frame tubelets), then a CLS pooling layer per time step.

    segment [BS, 3, 16, 224, 224] -> tubelets [BS, 8*14*14, D] (+ CLS) -> 12 divided blocks -> LayerNorm
    -> per time step, pool its 14*14 patches -> [BS, 8, D]

Hand-written (no installed library has MotionFormer); attribute names are the released checkpoint's
(``vfeat_extractor.*``). The checkpoint also holds a 2-D ``patch_embed`` that MotionFormer builds but never
applies to video; it is kept here, unused, so the state dict loads strictly.
"""
from __future__ import annotations

import torch
from torch import nn

from ovi.eval.synchformer.config import SynchformerConfig
from ovi.eval.synchformer.layers import CLSPool, Mlp, attend, merge_heads, split_heads


class DividedAttention(nn.Module):
    """CLS attends to every token; each patch token attends to CLS plus the tokens of its own frame
    (``along="space"``) or of its own position in the other frames (``along="time"``)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, frames: int, along: str) -> torch.Tensor:
        """x: [B, 1 + frames * patches, D], patch tokens frame-major."""
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))  # [B, H, N, d]
        cls_out = attend(q[:, :, :1], k, v)  # [B, H, 1, d]
        patches = (x.shape[1] - 1) // frames

        def grouped(t: torch.Tensor) -> torch.Tensor:  # [B, H, groups, length, d]
            t = t[:, :, 1:].unflatten(2, (frames, patches))  # [B, H, frames, patches, d]
            return t if along == "space" else t.transpose(2, 3)

        qg, kg, vg = grouped(q), grouped(k), grouped(v)
        groups = qg.shape[2]
        kg = torch.cat([k[:, :, None, :1].expand(-1, -1, groups, -1, -1), kg], dim=3)  # CLS key in every group
        vg = torch.cat([v[:, :, None, :1].expand(-1, -1, groups, -1, -1), vg], dim=3)
        out = attend(qg, kg, vg)  # [B, H, groups, length, d]
        if along == "time":
            out = out.transpose(2, 3)
        out = torch.cat([cls_out, out.flatten(2, 3)], dim=2)  # [B, H, N, d]
        return self.proj(merge_heads(out))


class DividedBlock(nn.Module):
    """Time attention, then space attention, then the MLP; each pre-normed and residual."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(width, eps=1e-6) for _ in range(3))
        self.attn = DividedAttention(width, heads)  # space
        self.timeattn = DividedAttention(width, heads)
        self.mlp = Mlp(width, mlp_ratio * width)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x), frames, "time")
        x = x + self.attn(self.norm1(x), frames, "space")
        return x + self.mlp(self.norm2(x))


class _Patchify(nn.Module):
    """Holds a patch convolution as ``proj`` (the checkpoint's ``patch_embed*.proj``)."""

    def __init__(self, proj: nn.Module) -> None:
        super().__init__()
        self.proj = proj


class MotionFormer(nn.Module):
    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        d, p = cfg.width, cfg.patch
        self.frames = cfg.video_tokens_per_segment  # time steps after the tubelet
        self.patch_embed = _Patchify(nn.Conv2d(3, d, p, p))  # unused (see the module docstring)
        self.patch_embed.requires_grad_(False)
        self.patch_embed_3d = _Patchify(nn.Conv3d(3, d, (cfg.tubelet, p, p), (cfg.tubelet, p, p)))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.grid**2, d))  # CLS + one frame's patches
        self.temp_embed = nn.Parameter(torch.zeros(1, self.frames, d))
        for t in (self.cls_token, self.pos_embed, self.temp_embed):
            nn.init.trunc_normal_(t, std=0.02)
        self.blocks = nn.ModuleList(DividedBlock(d, cfg.video_heads, cfg.mlp_ratio) for _ in range(cfg.video_depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.spatial_attn_agg = CLSPool(d, cfg.video_heads, cfg.mlp_ratio * d)

    def position(self) -> torch.Tensor:
        """[1, 1 + frames * patches, D]: a frame's spatial table plus each time step's vector; CLS has its own."""
        spatial = self.pos_embed[:, 1:].repeat(1, self.frames, 1)
        temporal = self.temp_embed.repeat_interleave(self.pos_embed.shape[1] - 1, dim=1)
        return torch.cat([self.pos_embed[:, :1], spatial + temporal], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [BS, 3, frames_per_segment, H, W] in [-1, 1] -> [BS, frames, D]."""
        tokens = self.patch_embed_3d.proj(x).flatten(2).transpose(1, 2)  # [BS, t*h*w, D], time-major
        bs, n, d = tokens.shape
        x = torch.cat([self.cls_token.expand(bs, -1, -1), tokens], dim=1) + self.position()
        for block in self.blocks:
            x = block(x, self.frames)
        x = self.norm(x[:, 1:])  # the encoder's CLS is not used downstream
        x = self.spatial_attn_agg(x.reshape(bs * self.frames, n // self.frames, d))  # [BS*t, D]
        return x.view(bs, self.frames, d)
