"""fp8 weight storage: keep ``nn.Linear`` weights in float8 e4m3fn and upcast them per layer at matmul time.

This halves the weight memory of the fusion model against bfloat16 (11.66B parameters: ~23 GB -> ~12 GB)
at the cost of 3 mantissa bits per weight. It is storage only: activations, biases and the matmul stay
in the activation dtype. Like the community fp8 release file (``ovi.release.FP8_FUSION``) it is a
plain per-tensor cast without scales, so storing the weights loaded from that file is lossless.

Call it on the loaded model (in its compute dtype, on any device, meta included); ``FP8Linear`` keeps
its weight in fp8 across later ``.to(device/dtype)`` calls, which would otherwise upcast every
floating-point parameter. On the 11B release in bfloat16 it saves 10.95 GB; the skipped layers
(``Tower.high_precision_parts``, 0.36 GB) and the audio tower's convolutional input embedding (~1 GB, not a Linear) stay bfloat16.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ovi.models.layers import Linear
from ovi.models.tower import Tower

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max  # 448

def default_skip(name: str) -> bool:
    """True for the layers the towers keep in high precision (``Tower.high_precision_parts``: conditioning and
    output layers). ``Tower.compute_dtype`` reads the patch embedding (a conv), which is never quantised."""
    return Tower.is_high_precision(name)


def to_fp8(weight: torch.Tensor) -> torch.Tensor:
    """Cast to e4m3fn, clamping to +-448 first so out-of-range values saturate instead of becoming NaN.

    e4m3fn has no infinity: torch's scalar conversion (c10) maps |x| >= 480 to NaN, and whether a
    tensor cast saturates instead has depended on the kernel and torch version (the CPU cast of torch
    2.13 saturates). Clamping makes the result the same everywhere; it only touches outlier weights.
    """
    return weight.detach().clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


class FP8Linear(nn.Linear):
    """An ``nn.Linear`` whose weight is stored in fp8 and upcast to the input's dtype in ``forward``.

    The parameter keeps the name ``weight`` (state_dict keys are unchanged; a saved state_dict holds
    the fp8 values). It is frozen: fp8 storage is for inference.
    """

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> FP8Linear:
        # Built on meta so no full-precision weight is allocated, then given the real tensors.
        with torch.device("meta"):
            new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        new.weight = nn.Parameter(to_fp8(linear.weight), requires_grad=False)
        new.bias = linear.bias
        new.train(linear.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's signature
        super()._apply(fn, recurse)
        # .to(dtype)/.half()/.float() cast every floating-point parameter, fp8 included; put it back.
        # Exact: every e4m3fn value is representable in bfloat16/float16/float32.
        if self.weight.dtype != FP8_DTYPE and not self.weight.is_meta:
            self.weight = nn.Parameter(to_fp8(self.weight), requires_grad=False)
        return self


def store_linear_weights_fp8(model: nn.Module, skip: Callable[[str], bool] | None = None) -> int:
    """Replace every ``nn.Linear`` of ``model`` (except where ``skip(name)``) by an ``FP8Linear``.

    ``skip`` receives the module's qualified name (``video_model.blocks.0.ffn.0``); None means
    ``default_skip``. Layers already in fp8 are left alone, so calling twice is harmless.
    Returns the bytes of weight storage saved.
    """
    skip = default_skip if skip is None else skip
    targets = [(name, m) for name, m in model.named_modules()
               if type(m) in (nn.Linear, Linear) and not skip(name)]  # exact types: FP8Linear has its own forward
    saved = 0
    for name, linear in targets:
        fp8 = FP8Linear.from_linear(linear)
        saved += linear.weight.nbytes - fp8.weight.nbytes
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, fp8)
    return saved


def linear_weight_bytes(model: nn.Module) -> dict[torch.dtype, int]:
    """Bytes of Linear weights per dtype (to report what fp8 storage left in higher precision)."""
    out: dict[torch.dtype, int] = {}
    for m in model.modules():
        if isinstance(m, nn.Linear):
            out[m.weight.dtype] = out.get(m.weight.dtype, 0) + m.weight.nbytes
    return out
