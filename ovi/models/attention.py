"""Attention backends with key-padding masks: flash-attn 3, flash-attn 2, or torch SDPA.

All take q [B, Lq, H, D], k/v [B, Lk, H, D] and optional ``k_lens`` [B] (keys at or past a sample's
length are ignored), and return [B, Lq, H, D]. Softmax scale is 1/sqrt(D), no causal mask. The SDPA
path with a boolean key mask gives the same result as flash's varlen kernels, so CPU runs and tests
match GPU semantics.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "flash3", "flash2", "sdpa")
_FLASH_DTYPES = (torch.float16, torch.bfloat16)


@lru_cache(maxsize=None)
def _flash_varlen(name: str) -> Callable | None:
    try:
        if name == "flash3":
            from flash_attn_interface import flash_attn_varlen_func  # type: ignore[import-not-found]
        else:
            from flash_attn import flash_attn_varlen_func  # type: ignore[import-not-found]
    except ImportError:
        return None
    return flash_attn_varlen_func


@lru_cache(maxsize=None)
def _log_backend(name: str) -> None:
    logger.info("attention backend: %s", name)


def resolve_backend(requested: str, q: torch.Tensor) -> str:
    """The backend that will run for this input: flash needs CUDA, half precision and the package."""
    if requested not in BACKENDS:
        raise ValueError(f"attention backend {requested!r} unknown; choose one of {BACKENDS}")
    if requested == "sdpa":
        return "sdpa"
    usable = q.is_cuda and q.dtype in _FLASH_DTYPES
    for name in ("flash3", "flash2") if requested == "auto" else (requested,):
        if usable and _flash_varlen(name) is not None:
            return name
        if requested != "auto":
            raise RuntimeError(
                f"attention backend {name} needs CUDA fp16/bf16 inputs and the "
                f"{'flash_attn_interface (FA3)' if name == 'flash3' else 'flash-attn'} package; "
                "use attention_backend=sdpa or auto"
            )
    return "sdpa"


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_lens: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    name = resolve_backend(backend, q)
    _log_backend(name)
    if name == "sdpa":
        return _sdpa(q, k, v, k_lens)
    return _flash(_flash_varlen(name), q, k, v, k_lens)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_lens: torch.Tensor | None) -> torch.Tensor:
    mask = None
    if k_lens is not None and bool((k_lens < k.shape[1]).any()):
        mask = torch.arange(k.shape[1], device=k.device)[None, :] < k_lens.to(k.device)[:, None]  # [B, Lk]
        mask = mask[:, None, None, :]  # broadcast over heads and queries
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def _flash(fn: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_lens: torch.Tensor | None) -> torch.Tensor:
    b, lq, h, d = q.shape
    lk = k.shape[1]
    if k_lens is None:
        k_lens = torch.full((b,), lk, dtype=torch.int32, device=q.device)
    k_lens = k_lens.to(device=q.device, dtype=torch.int32)
    keep = torch.arange(lk, device=q.device)[None, :] < k_lens[:, None]  # [B, Lk]
    zero = torch.zeros(1, dtype=torch.int32, device=q.device)
    cu_q = torch.arange(0, (b + 1) * lq, lq, dtype=torch.int32, device=q.device)
    cu_k = torch.cat([zero, k_lens.cumsum(0, dtype=torch.int32)])
    out = fn(
        q.reshape(b * lq, h, d),
        k[keep],
        v[keep],
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        max_seqlen_q=lq,
        max_seqlen_k=int(k_lens.max()),
    )
    out = out[0] if isinstance(out, tuple) else out  # FA3 may return (out, lse)
    return out.reshape(b, lq, h, d)
