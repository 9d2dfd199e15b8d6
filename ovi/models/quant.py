"""Weight quantisation tiers of the fusion model's linear layers (inference only).

    none        the compute dtype (bf16 in the release): 2 bytes per weight
    fp8         float8 e4m3fn, one cast per tensor, no scale (ovi.models.fp8; lossless for the community fp8
                file, whose values were cast the same way)
    fp8_scaled  float8 e4m3fn with one float32 scale per output channel (torchao): about half the error of
                the unscaled cast on FFN-shaped weights. On GPUs with fp8 tensor cores (compute capability
                8.9+, Hopper) the activations are quantised per row too and the matmul runs in fp8.
    int8        int8 with one scale per output channel, weight-only (torchao): the reference's qint8 tier

The layers ``Tower.high_precision_parts`` names (time/text conditioning, modulation, head) stay in the
compute dtype in every tier (see ``ovi.models.fp8.default_skip``). torchao is an optional dependency
(``pip install -e .[quant]``), imported only for the two torchao tiers.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ovi.models.fp8 import default_skip, store_linear_weights_fp8

QUANTIZE_MODES = ("none", "fp8", "fp8_scaled", "int8")


def has_fp8_matmul(device: torch.device) -> bool:
    """Whether ``device`` has fp8 tensor cores (NVIDIA compute capability 8.9 or newer)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def quantize_model(
    model: nn.Module, mode: str, device: torch.device | None = None, skip: Callable[[str], bool] | None = None
) -> int:
    """Quantise ``model``'s linear weights in place; returns the bytes of weight storage saved.

    ``device``: where the model will run (decides the fp8 matmul path of ``fp8_scaled``); None: the CPU.
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize={mode!r} unknown; choose one of {', '.join(QUANTIZE_MODES)}")
    if mode == "none":
        return 0
    if mode == "fp8":
        return store_linear_weights_fp8(model, skip)
    try:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            Float8WeightOnlyConfig,
            Int8WeightOnlyConfig,
            PerRow,
            quantize_,
        )
    except ImportError as e:
        raise ImportError(f"quantize={mode} needs torchao: pip install -e '.[quant]' (or pip install torchao)") from e
    skip = default_skip if skip is None else skip
    if mode == "int8":
        config = Int8WeightOnlyConfig()
    elif has_fp8_matmul(device or torch.device("cpu")):
        config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    else:
        config = Float8WeightOnlyConfig()
    before = weight_storage_bytes(model)
    quantize_(model, config, filter_fn=lambda m, name: isinstance(m, nn.Linear) and not skip(name))
    return before - weight_storage_bytes(model)


def weight_storage_bytes(model: nn.Module) -> int:
    """Bytes held by the linear weights, counting a quantised tensor's data and scales."""
    return sum(_storage_bytes(m.weight) for m in model.modules() if isinstance(m, nn.Linear))


def _storage_bytes(t: torch.Tensor) -> int:
    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return sum(_storage_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()
