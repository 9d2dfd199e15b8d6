"""Magnitude-preserving (EDM2-style) 1-D building blocks of MMAudio's audio VAE.

Every layer keeps activations at roughly unit RMS: weights are normalised per output channel, SiLU
and residual sums are rescaled by constants, and features are "pixel-normalised" across channels.
Tensors are [B, C, T] throughout.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# EDM2's normalisation epsilon, added to the RMS (not to the squared norm). Dropping it moves the VAE
# outputs by ~2e-4 relative: small, but far outside the exact-math tolerance.
NORM_EPS = 1e-4
# std(silu(x)) for x ~ N(0, 1), as EDM2 rounds it.
SILU_STD = 0.596
# Residual branch weight of every mp_sum in this VAE (blocks and attention).
RESIDUAL_BLEND = 0.3
# Nearest-neighbour factor of the decoder's upsample / average-pool factor of the encoder's downsample.
TIME_STRIDE = 2


def rms_normalize(x: torch.Tensor, dim: int | tuple[int, ...], eps: float = NORM_EPS) -> torch.Tensor:
    """x / (eps + RMS of x over ``dim``); the norm is accumulated in at least float32 (EDM2 ``normalize``)."""
    acc = torch.promote_types(x.dtype, torch.float32)
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=acc)
    # RMS = ||x|| * sqrt(norm elements / x elements), i.e. 1 / sqrt(size of the reduced dims).
    norm = torch.add(eps, norm, alpha=math.sqrt(norm.numel() / x.numel()))
    return x / norm.to(x.dtype)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x) / SILU_STD


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = RESIDUAL_BLEND) -> torch.Tensor:
    """(1 - t) a + t b, rescaled to unit variance for independent unit-variance inputs."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


class MPConv1D(nn.Module):
    """Bias-free conv1d ('same' padding) whose weight is normalised once, after loading.

    The checkpoint holds raw weights; ``normalize_weight`` turns each output channel into a vector of
    RMS 1 / sqrt(fan_in) (so the output has unit variance). It must run exactly once, in float32,
    before inference; the owning VAE tracks that.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size))  # [O, I, K]

    @torch.no_grad()
    def normalize_weight(self) -> None:
        w = self.weight.to(torch.promote_types(self.weight.dtype, torch.float32))
        fan_in = w[0].numel()
        w = rms_normalize(w, dim=(1, 2)) / math.sqrt(fan_in)
        self.weight.copy_(w)

    def forward(self, x: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if gain is None else self.weight * gain
        return F.conv1d(x, w, padding=w.shape[-1] // 2)


class ResnetBlock1D(nn.Module):
    """pixel-norm -> (mp_silu, conv) x 2, with a 1x1 shortcut when the width changes; mp_sum(0.3)."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int) -> None:
        super().__init__()
        self.conv1 = MPConv1D(in_dim, out_dim, kernel_size)
        self.conv2 = MPConv1D(out_dim, out_dim, kernel_size)
        # Key name as in the release checkpoint (`...nin_shortcut.weight`).
        self.nin_shortcut = MPConv1D(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rms_normalize(x, dim=1)
        h = self.conv2(mp_silu(self.conv1(mp_silu(x))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return mp_sum(x, h)


class AttnBlock1D(nn.Module):
    """Single-head self-attention over time with cosine-normalised q, k, v (EDM2 style)."""

    def __init__(self, channels: int, num_heads: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = MPConv1D(channels, 3 * channels, 1)
        self.proj_out = MPConv1D(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        # qkv channels are interleaved per head: index = (head * C/heads + c) * 3 + {q, k, v}.
        y = self.qkv(x).reshape(b, self.num_heads, c // self.num_heads, 3, t)
        q, k, v = rms_normalize(y, dim=2).unbind(3)  # each [B, heads, C/heads, T]
        h = F.scaled_dot_product_attention(q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3))  # [B, h, T, c]
        h = h.transpose(2, 3).reshape(b, c, t)
        return mp_sum(x, self.proj_out(h))


class Downsample1D(nn.Module):
    """1x1 conv -> average-pool by 2 (floors odd lengths) -> 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = MPConv1D(channels, channels, 1)
        self.conv2 = MPConv1D(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=TIME_STRIDE, stride=TIME_STRIDE))


class Upsample1D(nn.Module):
    """nearest-exact x2 in time -> conv k3."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = MPConv1D(channels, channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=float(TIME_STRIDE), mode="nearest-exact"))
