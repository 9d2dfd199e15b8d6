"""Attention backends: flash-attn 3, flash-attn 2, torch's varlen flash kernel, or torch SDPA.

All take q [B, Lq, H, D], k/v [B, Lk, H, D] and optional ``k_lens`` [B] (keys at or past a sample's
length are ignored), and return [B, Lq, H, D]. Softmax scale is 1/sqrt(D), no causal mask.

``k_lens=None`` means "no padding": callers know their token counts on the host, so they pass lengths
only when a sample is shorter than the batch. Nothing here reads a tensor back to the host (a device
sync on a GPU): without padding SDPA runs maskless and may pick its flash / cuDNN / efficient kernels;
with padding on a GPU, torch's ``varlen_attn`` takes the padded keys and ``seqused_k`` as they are.
The SDPA path with a boolean key mask gives the same result as the varlen kernels, so CPU runs and
tests match GPU semantics.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "flash3", "flash2", "varlen", "sdpa")
_FLASH_DTYPES = (torch.float16, torch.bfloat16)


@lru_cache(maxsize=None)
def _flash_varlen(name: str) -> Callable | None:
    try:
        if name == "flash3":
            from flash_attn_interface import flash_attn_varlen_func  # type: ignore[import-not-found]
        elif name == "flash2":
            from flash_attn import flash_attn_varlen_func  # type: ignore[import-not-found]
        else:
            from torch.nn.attention.varlen import varlen_attn as flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


@lru_cache(maxsize=None)
def _log_backend(name: str, padded: bool) -> None:
    logger.info("attention path: %s (%s keys)", name, "padded" if padded else "unpadded")


def resolve_backend(requested: str, q: torch.Tensor, padded: bool = True) -> str:
    """The backend that will run for this input: flash needs CUDA, half precision and the kernel.

    ``auto`` prefers the flash-attn packages; without them, unpadded keys go to SDPA (whose own flash /
    cuDNN kernels apply without a mask) and padded keys to torch's varlen kernel.
    """
    if requested not in BACKENDS:
        raise ValueError(f"attention backend {requested!r} unknown; choose one of {BACKENDS}")
    if requested == "sdpa":
        return "sdpa"
    usable = q.is_cuda and q.dtype in _FLASH_DTYPES
    order = ("flash3", "flash2") + (("varlen",) if padded else ()) if requested == "auto" else (requested,)
    for name in order:
        if usable and _flash_varlen(name) is not None:
            return name
        if requested != "auto":
            package = {"flash3": "flash_attn_interface (FA3)", "flash2": "flash-attn", "varlen": "torch>=2.10"}[name]
            raise RuntimeError(
                f"attention backend {name} needs CUDA fp16/bf16 inputs and {package}; "
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
    name = resolve_backend(backend, q, padded=k_lens is not None)
    _log_backend(name, k_lens is not None)
    if name == "sdpa":
        return _sdpa(q, k, v, k_lens)
    return _varlen(name, q, k, v, k_lens)


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """SDPA with an additive per-key score bias [B, Lk] (float32; -inf drops a key). Used by the compacted
    text keys, which are short: SDPA's memory-efficient kernels take the bias on a GPU."""
    mask = None if bias is None else bias.to(q.dtype)[:, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_lens: torch.Tensor | None) -> torch.Tensor:
    mask = None
    if k_lens is not None:
        mask = torch.arange(k.shape[1], device=k.device)[None, :] < k_lens.to(k.device)[:, None]  # [B, Lk]
        mask = mask[:, None, None, :]  # broadcast over heads and queries
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def _varlen(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_lens: torch.Tensor | None) -> torch.Tensor:
    """Padded batch -> packed varlen call. Every sample keeps its full padded key block (cu_seqlens_k steps by
    Lk); only the first ``k_lens[b]`` keys count (``seqused_k``), so no gather and no host read is needed."""
    b, lq, h, d = q.shape
    lk = k.shape[1]
    cu_q = torch.arange(0, (b + 1) * lq, lq, dtype=torch.int32, device=q.device)
    cu_k = torch.arange(0, (b + 1) * lk, lk, dtype=torch.int32, device=q.device)
    packed = (q.reshape(b * lq, h, d), k.reshape(b * lk, h, d), v.reshape(b * lk, h, d))
    used = None if k_lens is None else k_lens.to(device=q.device, dtype=torch.int32)
    fn = _flash_varlen(name)
    if name == "varlen":
        out = fn(*packed, cu_q, cu_k, lq, lk, seqused_k=used)
    elif name == "flash3":
        out = fn(*packed, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=lq, max_seqlen_k=lk, seqused_k=used)
    else:
        out = _flash2(fn, q, k, v, k_lens)
    out = out[0] if isinstance(out, tuple) else out  # FA3 may return (out, lse)
    return out.reshape(b, lq, h, d)


def _flash2(fn: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_lens: torch.Tensor | None) -> torch.Tensor:
    """flash-attn 2 has no ``seqused_k``: padded keys are gathered out (a host sync, only when padded)."""
    b, lq, h, d = q.shape
    lk = k.shape[1]
    lens = torch.full((b,), lk, dtype=torch.int32, device=q.device) if k_lens is None else k_lens.to(q.device, torch.int32)
    keep = torch.arange(lk, device=q.device)[None, :] < lens[:, None]  # [B, Lk]
    zero = torch.zeros(1, dtype=torch.int32, device=q.device)
    cu_q = torch.arange(0, (b + 1) * lq, lq, dtype=torch.int32, device=q.device)
    cu_k = torch.cat([zero, lens.cumsum(0, dtype=torch.int32)])
    ks, vs = (k[keep], v[keep]) if k_lens is not None else (k.reshape(b * lk, h, d), v.reshape(b * lk, h, d))
    return fn(q.reshape(b * lq, h, d), ks, vs, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=lq, max_seqlen_k=lk)
