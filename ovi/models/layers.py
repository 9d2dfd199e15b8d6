"""Small building blocks of the Wan2.2-shaped tower: norms, embeddings, FFN, output head.

Norms compute in float32 when the activations are lower precision (as CUDA autocast does for the
released bf16 path) and return the input dtype, so one code path serves float32 and bfloat16.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ROPE_THETA = 10000.0
SINUSOID_THETA = 10000.0


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def widen_on_cpu(x: torch.Tensor) -> bool:
    """Whether a bf16/fp16 GEMM or conv on ``x`` should run as a float32 kernel.

    CPUs without native bf16 matmul (AVX2, most AVX-512) widen to float32 inside their bf16 kernels anyway,
    only 5-10x slower. Doing it ourselves gives the same exact products and float32 accumulation, rounded
    once to the input dtype, at float32 speed. GPUs keep their native half-precision kernels.
    """
    return x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16)


class Linear(nn.Linear):
    """``nn.Linear`` that runs half-precision CPU inputs as float32 GEMMs (see :func:`widen_on_cpu`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A quantised weight (torchao tensor subclass) dequantises inside F.linear itself.
        if widen_on_cpu(x) and type(self.weight) in (torch.Tensor, nn.Parameter):
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self.weight.float(), bias).to(x.dtype)
        return super().forward(x)


class RMSNorm(nn.Module):
    """RMS norm over the last dim with a learned gain (applied to q/k over the full model width)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.to(_compute_dtype(x))
        xc = xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xc * self.weight.to(xc.dtype)).to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in at least float32; ``affine=False`` is the modulated pre-norm."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = False) -> None:
        super().__init__(dim, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = _compute_dtype(x)
        w = None if self.weight is None else self.weight.to(dt)
        b = None if self.bias is None else self.bias.to(dt)
        return F.layer_norm(x.to(dt), self.normalized_shape, w, b, self.eps).to(x.dtype)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Timestep features ``[cos(t*w_k), sin(t*w_k)]`` with ``w_k = 10000^(-k/(dim/2))``, in float64.

    t: any shape -> [..., dim]. float64 keeps large timesteps (up to 1000) exact before the cast.
    """
    half = dim // 2
    omega = torch.pow(SINUSOID_THETA, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = t.to(torch.float64).unsqueeze(-1) * omega
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` in one fused kernel (shift/scale broadcast over tokens)."""
    return torch.addcmul(shift, x, 1 + scale)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + gate * y`` in one fused kernel."""
    return torch.addcmul(x, gate, y)


class FeedForward(nn.Sequential):
    """Linear -> GELU(tanh) -> Linear; Sequential so the state_dict keys are ``ffn.0`` / ``ffn.2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(Linear(dim, hidden), nn.GELU(approximate="tanh"), Linear(hidden, dim))


class ChannelLastConv1d(nn.Conv1d):
    """Conv1d over ``[B, L, C]`` tensors (audio latents are stored channels-last)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # [B, C, L]
        if widen_on_cpu(x):
            bias = None if self.bias is None else self.bias.float()
            return self._conv_forward(x.float(), self.weight.float(), bias).to(x.dtype).transpose(1, 2)
        return super().forward(x).transpose(1, 2)


class ConvMLP(nn.Module):
    """Gated conv MLP ``w2(silu(w1 x) * w3 x)`` with bias-free k=7 convs (the audio input embedding)."""

    def __init__(self, dim: int, hidden: int, kernel_size: int = 7) -> None:
        super().__init__()
        # SwiGLU sizing: 2/3 of the nominal hidden width, rounded up to a multiple of 256.
        hidden = 256 * math.ceil(int(2 * hidden / 3) / 256)
        pad = kernel_size // 2
        self.w1 = ChannelLastConv1d(dim, hidden, kernel_size, padding=pad, bias=False)
        self.w2 = ChannelLastConv1d(hidden, dim, kernel_size, padding=pad, bias=False)
        self.w3 = ChannelLastConv1d(dim, hidden, kernel_size, padding=pad, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def audio_patch_embedding(in_dim: int, dim: int, kernel_size: int = 7) -> nn.Sequential:
    """Audio latents [B, L, in_dim] -> tokens [B, L, dim]: conv, SiLU, gated ConvMLP (no patching)."""
    return nn.Sequential(
        ChannelLastConv1d(in_dim, dim, kernel_size, padding=kernel_size // 2),
        nn.SiLU(),
        ConvMLP(dim, 4 * dim, kernel_size),
    )


class Modulation(nn.Module):
    """Learned per-block offsets added to the timestep projection: (shift, scale, gate) x (attn, ffn)."""

    def __init__(self, dim: int, n: int = 6) -> None:
        super().__init__()
        self.modulation = nn.Parameter(torch.randn(1, n, dim) / dim**0.5)

    def forward(self, e0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """e0: [B, L|1, n, dim] -> n tensors [B, L|1, dim]."""
        return (self.modulation.unsqueeze(0).to(e0.dtype) + e0).unbind(2)


class Head(nn.Module):
    """Modulated LayerNorm + Linear to ``prod(patch) * out_dim`` values per token."""

    def __init__(self, dim: int, out_dim: int, patch_size: list[int], eps: float) -> None:
        super().__init__()
        self.norm = LayerNorm(dim, eps)
        self.head = Linear(dim, math.prod(patch_size) * out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x: [B, L, dim], e: [B, L|1, dim] -> [B, L, prod(patch)*out_dim]."""
        shift, scale = (self.modulation.unsqueeze(0).to(e.dtype) + e.unsqueeze(2)).unbind(2)
        return self.head(modulate(self.norm(x), shift, scale))
