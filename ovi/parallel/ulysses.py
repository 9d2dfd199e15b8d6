"""Ulysses sequence parallelism for the towers: each rank of an SP group holds 1/P of every token stream.

Applied to a built model (:func:`apply_sequence_parallel`); the model itself only has two hooks,
``Tower.sequence_parallel`` (split the tokens after embedding, gather the head's output) and
``SelfAttention.attend_tokens`` (attention over the token sequence). Per tower and forward:

    embed (every rank, full latents)  -> pad L to Lp = P * ceil(L / P) -> keep tokens [r*Lp/P, (r+1)*Lp/P)
        x [B, Lp/P, dim]; per-token e/e0 and the rotary table sliced the same way (positions follow the split)
    self-attention:  q, k, v [B, Lp/P, H, D] --all-to-all--> [B, Lp, H/P, D] -> attention -> back to [B, Lp/P, H, D]
    cross-modal:     q (this tower) and k, v (other tower, its own split) the same way: every head sees all keys
    text attention:  local (the text K/V is on every rank; a query token needs no other token)
    head -> [B, Lp/P, C] --all-gather--> [B, Lp, C] -> unpatchify (padding rows dropped)

Padding: the Lp - L added keys are masked through ``seq_lens`` (the global token counts), so the result equals
the unsplit model's to float rounding. Heads must divide by P (24 heads: P in 1, 2, 3, 4, 6, 8).

Gradients: the all-to-all's backward is the inverse all-to-all; the gather's backward sums the output
gradients over the group and keeps this rank's rows (the derivative of the sum of the ranks' identical losses).
So a parameter's gradient summed over the SP group is P x the unsplit model's, and a data-parallel mean over
all dp x P ranks (DeepSpeed's) gives exactly the unsplit gradient averaged over the data-parallel groups.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.distributed as dist
from torch import nn

from ovi.models.attention import attention
from ovi.models.rope import RotaryTable
from ovi.models.tower import SelfAttention, Tower, TowerTokens
from ovi.parallel.groups import ParallelLayout


def _seq_to_heads(x: torch.Tensor, group: object, p: int) -> torch.Tensor:
    """[B, Ls, H, D] (this rank's tokens, all heads) -> [B, P*Ls, H/P, D] (all tokens, this rank's heads)."""
    b, ls, h, d = x.shape
    send = x.reshape(b, ls, p, h // p, d).permute(2, 0, 1, 3, 4).contiguous()  # [P, B, Ls, H/P, D]: chunk r -> rank r
    recv = torch.empty_like(send)  # recv[r]: rank r's tokens, this rank's heads
    dist.all_to_all_single(recv, send, group=group)
    return recv.permute(1, 0, 2, 3, 4).reshape(b, p * ls, h // p, d)


def _heads_to_seq(x: torch.Tensor, group: object, p: int) -> torch.Tensor:
    """[B, L, H/P, D] (all tokens, this rank's heads) -> [B, L/P, H, D] (this rank's tokens, all heads)."""
    b, length, hp, d = x.shape
    send = x.reshape(b, p, length // p, hp, d).permute(1, 0, 2, 3, 4).contiguous()  # [P, B, Ls, H/P, D]
    recv = torch.empty_like(send)  # recv[r]: this rank's tokens, rank r's heads
    dist.all_to_all_single(recv, send, group=group)
    return recv.permute(1, 2, 0, 3, 4).reshape(b, length // p, p * hp, d)


class _AllToAll(torch.autograd.Function):
    """Autograd-aware all-to-all between the token split and the head split; backward is the inverse."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: object, p: int, to_heads: bool) -> torch.Tensor:  # type: ignore[override]
        ctx.group, ctx.p, ctx.to_heads = group, p, to_heads
        return (_seq_to_heads if to_heads else _heads_to_seq)(x, group, p)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        back = _heads_to_seq if ctx.to_heads else _seq_to_heads
        return back(grad.contiguous(), ctx.group, ctx.p), None, None, None


class _GatherTokens(torch.autograd.Function):
    """[B, Ls, C] per rank -> [B, P*Ls, C] on every rank; backward: group-summed gradient, this rank's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: object, p: int, rank: int) -> torch.Tensor:  # type: ignore[override]
        ctx.group, ctx.rank, ctx.ls = group, rank, x.shape[1]
        parts = [torch.empty_like(x) for _ in range(p)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[:, ctx.rank * ctx.ls : (ctx.rank + 1) * ctx.ls].contiguous(), None, None, None


class UlyssesAttention:
    """``attention`` over a token sequence split across the SP group (same signature and semantics)."""

    def __init__(self, layout: ParallelLayout) -> None:
        self.group, self.p = layout.sp_group, layout.sp_size

    def _a2a(self, x: torch.Tensor, to_heads: bool) -> torch.Tensor:
        return _AllToAll.apply(x, self.group, self.p, to_heads)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_lens: torch.Tensor | None = None,
                 backend: str = "auto") -> torch.Tensor:
        b = q.shape[0]
        if q.shape == k.shape:  # self-attention: one all-to-all for q, k and v (stacked on the batch)
            q, k, v = self._a2a(torch.cat([q, k, v]), True).split(b)
        else:  # cross-modal: the other tower's k, v together
            q = self._a2a(q, True)
            k, v = self._a2a(torch.cat([k, v]), True).split(b)
        return self._a2a(attention(q, k, v, k_lens=k_lens, backend=backend), False)


class SequenceShard:
    """``Tower.sequence_parallel``: split a tower's tokens after embedding, gather the head's output."""

    def __init__(self, layout: ParallelLayout) -> None:
        self.layout = layout

    def padded_length(self, length: int) -> int:
        return self.layout.sp_size * math.ceil(length / self.layout.sp_size)

    def shard(self, tok: TowerTokens) -> TowerTokens:
        """Full padded batch [B, L, ...] -> this rank's [B, Lp/P, ...] (x, per-token e/e0, rope); seq_lens stays
        global (it masks the gathered keys), and is set when the SP padding is the only padding."""
        b, length = tok.x.shape[:2]
        lp = self.padded_length(length)
        ls = lp // self.layout.sp_size
        rows = slice(self.layout.sp_rank * ls, (self.layout.sp_rank + 1) * ls)

        def split(t: torch.Tensor, fill: float | None = None) -> torch.Tensor:
            if t.shape[1] == 1:  # one value for all tokens (per-sample timestep)
                return t
            if lp > length:  # padding rows: `fill`, or a copy of the last row (timesteps)
                tail = t[:, -1:] if fill is None else torch.full_like(t[:, -1:], fill)
                t = torch.cat([t, tail.expand(-1, lp - length, *t.shape[2:])], dim=1)
            return t[:, rows]

        seq_lens = tok.seq_lens
        if seq_lens is None and lp > length:
            seq_lens = torch.full((b,), length, dtype=torch.long, device=tok.x.device)
        rope = RotaryTable(split(tok.rope.cos, 1.0), split(tok.rope.sin, 0.0))  # identity on padding
        return replace(tok, x=split(tok.x, 0.0), e=split(tok.e), e0=split(tok.e0), rope=rope, seq_lens=seq_lens)

    def gather(self, out: torch.Tensor) -> torch.Tensor:
        """[B, Lp/P, C] on each rank -> [B, Lp, C] on every rank."""
        return _GatherTokens.apply(out, self.layout.sp_group, self.layout.sp_size, self.layout.sp_rank)


def towers(model: nn.Module) -> list[Tower]:
    return [model] if isinstance(model, Tower) else [m for m in model.children() if isinstance(m, Tower)]


def apply_sequence_parallel(model: nn.Module, layout: ParallelLayout) -> nn.Module:
    """Split ``model``'s (a FusionModel or a Tower) token streams over ``layout``'s SP group, in place.

    Every rank of the group must hold the same weights and call the model with the same inputs (same latents,
    timesteps, text); each gets the full outputs back. A no-op for SP size 1.
    """
    if layout.sp_group is None:
        return model
    for tower in towers(model):
        heads = tower.cfg.num_heads
        if heads % layout.sp_size:
            raise ValueError(f"sp_size {layout.sp_size} must divide the {tower.cfg.modality} tower's {heads} "
                             f"attention heads; choose one of {[p for p in range(1, heads + 1) if heads % p == 0]}")
        tower.sequence_parallel = SequenceShard(layout)
        for module in tower.modules():
            if isinstance(module, SelfAttention):  # CrossAttention too: its cross-modal part attends over tokens
                module.attend_tokens = UlyssesAttention(layout)
    return model


def remove_sequence_parallel(model: nn.Module) -> nn.Module:
    """Undo :func:`apply_sequence_parallel` (back to whole streams on every rank)."""
    for tower in towers(model):
        tower.sequence_parallel = None
        for module in tower.modules():
            if isinstance(module, SelfAttention):
                module.__dict__.pop("attend_tokens", None)
    return model


__all__ = ["UlyssesAttention", "SequenceShard", "apply_sequence_parallel", "remove_sequence_parallel"]
