"""Which parameters train: fnmatch patterns over state-dict names, and a printed summary."""
from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from dataclasses import dataclass

from torch import nn

from ovi.models.tower import Tower


@dataclass
class ParamCounts:
    trainable: int
    frozen: int
    trainable_tensors: int
    frozen_tensors: int
    by_group: dict[str, tuple[int, int]]  # group -> (trainable, frozen) element counts

    def summary(self) -> str:
        total = self.trainable + self.frozen
        lines = [
            f"parameters: {total:,} total, {self.trainable:,} trainable ({100 * self.trainable / max(total, 1):.1f}%, "
            f"{self.trainable_tensors} tensors), {self.frozen:,} frozen ({self.frozen_tensors} tensors)"
        ]
        width = max((len(g) for g in self.by_group), default=0)
        for group, (t, f) in sorted(self.by_group.items()):
            lines.append(f"  {group:<{width}}  trainable {t:>15,}  frozen {f:>15,}")
        return "\n".join(lines)


def _group(name: str) -> str:
    """'video_model.blocks.7.cross_attn.k_fusion.weight' -> 'video_model.blocks.*.cross_attn (fusion)'."""
    parts = re.sub(r"\.\d+(?=\.|$)", ".*", name).split(".")
    if "blocks" in parts:
        group = ".".join(parts[: parts.index("blocks") + 3])
        return group + " (fusion)" if Tower.is_cross_modal(name) else group
    return ".".join(parts[:2] if parts[0].endswith("_model") else parts[:1])


def apply_trainable(model: nn.Module, trainable: list[str], frozen: list[str]) -> ParamCounts:
    """Set ``requires_grad``: a parameter trains iff it matches a ``trainable`` pattern and no ``frozen`` one.

    Every pattern must match at least one parameter, so a misspelt pattern cannot silently freeze a model.
    """
    names = [n for n, _ in model.named_parameters()]
    for kind, patterns in (("trainable", trainable), ("frozen", frozen)):
        for pat in patterns:
            if not any(fnmatch.fnmatchcase(n, pat) for n in names):
                raise ValueError(f"{kind} pattern {pat!r} matches no parameter; e.g. names look like {names[:3]}")
    counts = ParamCounts(0, 0, 0, 0, {})
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, p in model.named_parameters():
        train = any(fnmatch.fnmatchcase(name, pat) for pat in trainable) and not any(
            fnmatch.fnmatchcase(name, pat) for pat in frozen
        )
        p.requires_grad_(train)
        n = getattr(p, "ds_numel", p.numel())  # ZeRO-3 (zero.Init) partitions p in place
        groups[_group(name)][0 if train else 1] += n
        if train:
            counts.trainable += n
            counts.trainable_tensors += 1
        else:
            counts.frozen += n
            counts.frozen_tensors += 1
    if counts.trainable == 0:
        raise ValueError("no parameter is trainable: check the `trainable` / `frozen` patterns")
    counts.by_group = {g: (t, f) for g, (t, f) in groups.items()}
    return counts


def full_ndim(p: nn.Parameter) -> int:
    """Dimensions of the whole parameter (a ZeRO-3 partition is a flat slice)."""
    return len(p.ds_shape) if hasattr(p, "ds_shape") else p.ndim


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters only; weight decay (if any) on matrices, not on norms, biases or modulations."""
    decay = [p for p in model.parameters() if p.requires_grad and full_ndim(p) >= 2]
    other = [p for p in model.parameters() if p.requires_grad and full_ndim(p) < 2]
    if weight_decay == 0.0:
        return [{"params": decay + other, "weight_decay": 0.0}]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
