"""Step caching: skip most of the fusion blocks at steps where the model's input barely moved.

Between neighbouring sampling steps the blocks' total effect on the hidden states (their residual) changes
slowly, and how much the *first* block's residual changed is a cheap predictor of how much the rest did.
So at each step the first fusion block always runs; its residual (both towers) is compared with the previous
step's. While the accumulated relative change since the last full step stays under ``threshold``, the
remaining blocks are skipped and their residual from the last full step is added instead; otherwise all
blocks run, the accumulator resets and the residual is refreshed. ``threshold = 0`` never skips.

Opt-in and not exact: the deviation it introduces is measured per threshold in
``benchmarks/sampling_step.py``. Deciding needs the change on the host: one device sync per step.
One cache per guidance branch and generation (a batched CFG forward shares one over its rows).
"""
from __future__ import annotations

import torch

Pair = tuple[torch.Tensor, torch.Tensor]  # (video [B, Lv, dim], audio [B, La, dim])


def relative_l1(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """mean|new - old| / mean|old| as a 0-d float32 tensor."""
    return (new.float() - old.float()).abs().mean() / old.float().abs().mean().clamp_min(1e-12)


class StepCache:
    """First-block residual cache for one branch of one generation; see the module docstring."""

    def __init__(self, threshold: float) -> None:
        if threshold < 0:
            raise ValueError(f"step cache threshold must be >= 0 (0 disables it), got {threshold}")
        self.threshold = threshold
        self.accumulated = 0.0
        self.prev_first: Pair | None = None  # the first block's residual at the previous step
        self.rest: Pair | None = None  # residual of blocks 1.. at the last fully computed step
        self.steps = 0
        self.reused = 0

    def can_reuse(self, first_residual: Pair) -> bool:
        """Called after the first block at every step: True to skip the other blocks this step."""
        prev, self.prev_first = self.prev_first, first_residual
        self.steps += 1
        if self.threshold == 0 or prev is None or self.rest is None:
            return False
        if any(p.shape != c.shape for p, c in zip(prev + self.rest, first_residual + first_residual)):
            return False  # another batch layout: nothing comparable cached
        change = max(float(relative_l1(c, p)) for c, p in zip(first_residual, prev))  # host sync
        if self.accumulated + change < self.threshold:
            self.accumulated += change
            self.reused += 1
            return True
        self.accumulated = 0.0
        return False

    def reuse(self, v: torch.Tensor, a: torch.Tensor) -> Pair:
        assert self.rest is not None
        return v + self.rest[0], a + self.rest[1]

    def store(self, after_first: Pair, after_all: Pair) -> None:
        """After a full step: remember what blocks 1.. added."""
        self.rest = (after_all[0] - after_first[0], after_all[1] - after_first[1])
