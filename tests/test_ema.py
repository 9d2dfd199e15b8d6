"""EMA of the trainable weights: fp32, the update rule, shares per rank that rebuild the full tensors."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from train.ema import Ema, ema_file, full_ema


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)).to(torch.bfloat16)
    model[1].bias.requires_grad_(False)
    return model


def test_ema_follows_the_update_rule_in_fp32_for_trainable_weights_only() -> None:
    model = _model()
    ema = Ema(model, 0.9, rank=0, world=1)
    assert set(ema.shares) == {"0.weight", "0.bias", "1.weight"}
    start = model[0].weight.detach().float().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update()
    value = ema.shares["0.weight"].value
    assert value.dtype == torch.float32
    assert torch.allclose(value, 0.9 * start + 0.1 * model[0].weight.float(), atol=1e-6)


def test_ranks_share_the_parameters_and_the_files_rebuild_and_reload_them(tmp_path: Path) -> None:
    model = _model()
    emas = [Ema(model, 0.5, rank=r, world=2) for r in range(2)]
    assert set(emas[0].shares).isdisjoint(emas[1].shares) and len(emas[0].shares) + len(emas[1].shares) == 3
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    for e in emas:
        e.update()
        torch.save(e.state(), tmp_path / ema_file(e.rank))
    full = full_ema(tmp_path)
    assert set(full) == {"0.weight", "0.bias", "1.weight"}
    one = Ema(model, 0.5, rank=0, world=1)  # resumed on one rank: takes every share
    one.load(tmp_path)
    assert all(torch.equal(one.shares[k].value, full[k]) for k in full)
    assert torch.allclose(full["0.bias"], 2.0 * model[0].bias.float() / 3.0, atol=1e-2)  # (x + 3x) / 2
