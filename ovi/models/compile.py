"""``torch.compile`` per block: each tower block's two halves are compiled on their own, so compile time is
that of one block (the blocks share code; each compiled function is guarded on its own weights) and the
fusion loop, the step cache and block streaming stay in eager Python. The arithmetic is the same graph, so
the exact-math tier holds (inductor may fuse and reorder float ops: differences at rounding level).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ovi.models.tower import TowerBlock


def compile_blocks(model: nn.Module, **options: Any) -> int:
    """Compile ``self_attention`` and ``cross_attention_ffn`` of every :class:`TowerBlock` in ``model``.

    ``options`` go to ``torch.compile`` (e.g. ``backend="eager"`` to check tracing only). Returns the number
    of blocks compiled. State dicts are unchanged (the compiled functions are instance attributes).
    """
    blocks = [m for m in model.modules() if isinstance(m, TowerBlock)]
    for block in blocks:
        block.self_attention = torch.compile(block.self_attention, **options)  # type: ignore[method-assign]
        block.cross_attention_ffn = torch.compile(block.cross_attention_ffn, **options)  # type: ignore[method-assign]
    return len(blocks)
