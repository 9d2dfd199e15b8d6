"""One Wan2.2-TI2V-5B-shaped DiT tower, for video (3-D latents) or audio (1-D latents).

Data flow of a standalone tower (``Tower.forward``; the fusion model interleaves two of them), for one
:class:`~ovi.models.stream.Stream`:
    latents (list, per-sample sizes) -> patch embedding -> zero-pad to seq_len      x  [B, L, dim]
    t [B] or [B, L] -> sinusoid -> time MLP -> e [B, L|1, dim] -> 6-way projection e0 [B, L|1, 6, dim]
    text [L_i, 4096] -> zero-pad to text_len -> text MLP (prepare_text, once)      ctx [B, text_len, dim]
    blocks: x += gate * SelfAttn(mod(LN x)); x += CrossAttn(norm3 x, ctx[, other tower]); x += gate * FFN(mod(LN x))
    head(x, e) -> unpatchify -> list of latents

The class also declares the policies other code reads instead of parsing names: which submodules are the
cross-modal layers, which stay in high precision, and which module is the unit of checkpointing/sharding.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from typing import ContextManager, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ovi.config import TowerConfig
from ovi.models.attention import attention, biased_attention
from ovi.models.layers import (
    FeedForward,
    Head,
    LayerNorm,
    Linear,
    Modulation,
    RMSNorm,
    audio_patch_embedding,
    gated_residual,
    modulate,
    sinusoidal_embedding,
)
from ovi.models.rope import RotaryTable, apply_rotary, audio_rotary_table, video_rotary_table
from ovi.models.stream import PreparedText, Stream, TextKV, compact_text_kv


@dataclass
class TowerTokens:
    """A padded batch inside a tower, plus everything its blocks need."""

    x: torch.Tensor  # [B, L, dim]
    e: torch.Tensor  # [B, L|1, dim] time embedding (head modulation)
    e0: torch.Tensor  # [B, L|1, 6, dim] per-block modulation base
    context: torch.Tensor  # [B, text_len, dim]
    seq_lens: torch.Tensor | None  # [B] true token counts; None when no sample is padded (no key mask)
    grid_sizes: list[tuple[int, ...]]  # per sample: (F, H/2, W/2) for video, (L,) for audio
    rope: RotaryTable  # batch dim B, or 1 when every sample has the same positions
    text_kv: TextKV | None = None  # per block text keys/values, when prepared once per generation
    text_bias: torch.Tensor | None = None  # [B, L_kv] score bias of the compacted text_kv

    def select(self, rows: Sequence[int]) -> TowerTokens:
        """These samples only (python indices, so no index tensor travels to the device)."""
        pick = lambda t: take_rows(t, rows)  # noqa: E731
        rope = self.rope if self.rope.cos.shape[0] == 1 else RotaryTable(pick(self.rope.cos), pick(self.rope.sin))
        kv = None if self.text_kv is None else tuple((pick(k), pick(v)) for k, v in self.text_kv)
        opt = lambda t: None if t is None else pick(t)  # noqa: E731
        return replace(self, x=pick(self.x), e=pick(self.e), e0=pick(self.e0), context=pick(self.context),
                       seq_lens=opt(self.seq_lens), grid_sizes=[self.grid_sizes[r] for r in rows], rope=rope,
                       text_kv=kv, text_bias=opt(self.text_bias))


def take_rows(x: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """``x[rows]`` along dim 0 built from slices: a view for a contiguous run, no host-to-device index copy."""
    rows = list(rows)
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return x[rows[0] : rows[0] + len(rows)]
    return torch.cat([x[r : r + 1] for r in rows])


@dataclass
class CrossModalTarget:
    """The other tower's hidden states as seen by this tower's cross-modal attention."""

    x: torch.Tensor  # [B, L_other, dim_other]
    seq_lens: torch.Tensor | None  # [B]; None: no padding
    rope: RotaryTable  # the other tower's rotation, applied to its keys


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (Linear(dim, dim) for _ in range(4))
        # q/k RMS-normed over the full width before the head split.
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    # Attention over the token sequence (self and cross-modal; not text): ovi.parallel.ulysses replaces it per
    # instance with an all-to-all around it when the tokens are split across ranks.
    attend_tokens = staticmethod(attention)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1))  # [B, L, dim] -> [B, L, H, D]

    def forward(self, x: torch.Tensor, seq_lens: torch.Tensor | None, rope: RotaryTable, backend: str) -> torch.Tensor:
        q = apply_rotary(self.heads(self.norm_q(self.q(x))), rope)
        k = apply_rotary(self.heads(self.norm_k(self.k(x))), rope)
        v = self.heads(self.v(x))
        return self.o(self.attend_tokens(q, k, v, k_lens=seq_lens, backend=backend).flatten(2))


class CrossAttention(SelfAttention):
    """Text cross-attention; with ``fusion=True`` also cross-modal attention to the other tower.

    Both attentions share the query projection and the output projection ``o``; their outputs are
    summed before ``o``. Text keys are not masked: contexts are zero-padded to ``text_len`` and the
    released model was trained attending to those padded rows.
    """

    # The cross-modal submodules (absent in a standalone tower): fresh at the start of fusion training.
    cross_modal_parts = ("k_fusion", "v_fusion", "pre_attn_norm_fusion", "norm_k_fusion")

    def __init__(self, dim: int, num_heads: int, eps: float, fusion: bool, target_dim: int | None = None) -> None:
        super().__init__(dim, num_heads, eps)
        self.fusion = fusion
        if fusion:
            target_dim = target_dim or dim
            self.k_fusion, self.v_fusion = Linear(target_dim, dim), Linear(target_dim, dim)
            self.pre_attn_norm_fusion = LayerNorm(target_dim, eps, affine=True)
            self.norm_k_fusion = RMSNorm(dim, eps)

    def text_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context [B, text_len, dim] -> keys, values [B, text_len, H, D]; constant over a generation."""
        return self.heads(self.norm_k(self.k(context))), self.heads(self.v(context))

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        rope: RotaryTable,
        target: CrossModalTarget | None,
        backend: str,
        text_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        text_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``text_kv``/``text_bias``: this block's prepared (compacted) text keys/values and their score bias.

        ``x`` may have one row where the text has B (rows that differ only in their prompt): the queries and the
        cross-modal attention then run once and broadcast, and the result has B rows.
        """
        q = self.heads(self.norm_q(self.q(x)))  # [1|B, L, H, D]
        q_text = q.expand(context.shape[0], -1, -1, -1)  # a view; no copy when q has B rows already
        if text_kv is None:
            out = attention(q_text, *self.text_kv(context), backend=backend)
        else:
            out = biased_attention(q_text, *text_kv, text_bias)
        if target is not None:
            t = self.pre_attn_norm_fusion(target.x)
            k_t = apply_rotary(self.heads(self.norm_k_fusion(self.k_fusion(t))), target.rope)
            v_t = self.heads(self.v_fusion(t))
            out = out + self.attend_tokens(apply_rotary(q, rope), k_t, v_t, k_lens=target.seq_lens, backend=backend)
        return self.o(out.flatten(2))


class TowerBlock(nn.Module):
    def __init__(self, cfg: TowerConfig, fusion: bool, target_dim: int | None = None) -> None:
        super().__init__()
        self.norm1 = LayerNorm(cfg.dim, cfg.eps)
        self.self_attn = SelfAttention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm3 = LayerNorm(cfg.dim, cfg.eps, affine=True)
        self.cross_attn = CrossAttention(cfg.dim, cfg.num_heads, cfg.eps, fusion, target_dim)
        self.norm2 = LayerNorm(cfg.dim, cfg.eps)
        self.ffn = FeedForward(cfg.dim, cfg.ffn_dim)
        self.modulation = Modulation(cfg.dim)

    def self_attention(self, tok: TowerTokens, x: torch.Tensor, backend: str) -> torch.Tensor:
        shift, scale, gate = self.modulation(tok.e0)[:3]
        y = self.self_attn(modulate(self.norm1(x), shift, scale), tok.seq_lens, tok.rope, backend)
        return gated_residual(x, gate, y)

    def cross_attention_ffn(
        self,
        tok: TowerTokens,
        x: torch.Tensor,
        target: CrossModalTarget | None,
        backend: str,
        text_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        shift, scale, gate = self.modulation(tok.e0)[3:]
        x = x + self.cross_attn(self.norm3(x), tok.context, tok.rope, target, backend, text_kv, tok.text_bias)
        return gated_residual(x, gate, self.ffn(modulate(self.norm2(x), shift, scale)))

    def forward(
        self, tok: TowerTokens, x: torch.Tensor, backend: str, text_kv: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        return self.cross_attention_ffn(tok, self.self_attention(tok, x, backend), None, backend, text_kv)


class Tower(nn.Module):
    """A Wan2.2-shaped DiT. ``fusion=True`` adds the cross-modal K/V layers the fusion model uses."""

    # Conditioning and output layers kept in the compute dtype by weight quantisation (fp8): the time MLP /
    # projection give every block's shift/scale/gate and the text MLP the context all cross-attention reads, so
    # rounding there shifts all tokens coherently; the head writes the velocity. ~1.5% of the weights.
    high_precision_parts = frozenset({"time_embedding", "time_projection", "text_embedding", "modulation", "head"})
    # The unit activation checkpointing recomputes and sharding must keep whole.
    no_split_modules = ("TowerBlock",)

    @staticmethod
    def is_cross_modal(name: str) -> bool:
        """True for a parameter/module name inside a cross-modal layer ('blocks.3.cross_attn.k_fusion.weight')."""
        return not set(CrossAttention.cross_modal_parts).isdisjoint(name.split("."))

    @classmethod
    def is_high_precision(cls, name: str) -> bool:
        """True for a parameter/module name inside one of ``high_precision_parts``."""
        return not cls.high_precision_parts.isdisjoint(name.split("."))

    def __init__(self, cfg: TowerConfig, fusion: bool = False, target_dim: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.head_dim = cfg.dim // cfg.num_heads
        if cfg.modality == "video":
            self.patch_embedding: nn.Module = nn.Conv3d(cfg.in_dim, cfg.dim, cfg.patch_size, stride=cfg.patch_size)
        else:
            self.patch_embedding = audio_patch_embedding(cfg.in_dim, cfg.dim)
        self.text_embedding = nn.Sequential(
            Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"), Linear(cfg.dim, cfg.dim)
        )
        self.time_embedding = nn.Sequential(Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), Linear(cfg.dim, 6 * cfg.dim))
        self.blocks = nn.ModuleList(TowerBlock(cfg, fusion, target_dim) for _ in range(cfg.num_layers))
        self.head = Head(cfg.dim, cfg.out_dim, cfg.patch_size, cfg.eps)
        self.gradient_checkpointing = False
        self.attention_backend = "auto"
        self.block_residency = None  # block streaming offload (ovi.models.offload): a context per block index
        self.sequence_parallel = None  # ovi.parallel.ulysses.SequenceShard: tokens split across ranks

    # -- layout: latents <-> tokens ------------------------------------------------------------------
    def grid_size(self, latent: torch.Tensor) -> tuple[int, ...]:
        """Token grid of one latent: video [C, F, H, W] -> (F/pt, H/ph, W/pw); audio [L, C] -> (L,)."""
        if self.cfg.modality == "video":
            return tuple(n // p for n, p in zip(latent.shape[1:], self.cfg.patch_size))
        return (latent.shape[0],)

    def num_tokens(self, latent: torch.Tensor) -> int:
        return math.prod(self.grid_size(latent))

    def tokens_per_unit(self, latent: torch.Tensor) -> int:
        """Tokens per latent frame (video: (H/2)*(W/2)) or per audio latent (1): the unit of a clean prefix."""
        return math.prod(self.grid_size(latent)[1:])

    def patchify(self, latent: torch.Tensor) -> torch.Tensor:
        """One latent -> its patches [num_tokens, prod(patch) * C] in token order, channels last (as the head writes)."""
        if self.cfg.modality != "video":
            return latent
        c = latent.shape[0]
        pt, ph, pw = self.cfg.patch_size
        f, h, w = self.grid_size(latent)
        u = latent[:, : f * pt, : h * ph, : w * pw].reshape(c, f, pt, h, ph, w, pw)
        return u.permute(1, 3, 5, 2, 4, 6, 0).reshape(f * h * w, pt * ph * pw * c)  # the head's layout

    def unpatchify(self, patches: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Patches [>= prod(grid), prod(patch) * C] (padding rows ignored) -> one latent in the input layout."""
        u = patches[: math.prod(grid)]
        if self.cfg.modality != "video":
            return u
        pt, ph, pw = self.cfg.patch_size
        f, h, w = grid
        c = u.shape[-1] // (pt * ph * pw)
        u = u.view(f, h, w, pt, ph, pw, c).permute(6, 0, 3, 1, 4, 2, 5)  # [C, f, pt, h, ph, w, pw]
        return u.reshape(c, f * pt, h * ph, w * pw)

    # -- prompt-constant work: once per generation ----------------------------------------------------
    def prepare_text(self, context: list[torch.Tensor], cache_kv: bool = False) -> PreparedText:
        """Text embeddings [L_i, text_dim] -> zero-padded to text_len -> text MLP: [B, text_len, dim].

        ``cache_kv``: also project every block's text keys/values now (sampling: the text is fixed for the
        whole generation, so the blocks need not project it again at every step).
        """
        dtype = self.compute_dtype
        ctx = self.text_embedding(torch.stack([self._pad_text(c.to(dtype)) for c in context]))
        if not cache_kv:
            return PreparedText(ctx)
        kv = []
        for i, block in enumerate(self.blocks):
            with self.resident(i):
                kv.append(block.cross_attn.text_kv(ctx))
        if dtype not in (torch.float32, torch.float64):  # a log-count score bias would round in half precision
            return PreparedText(ctx, tuple(kv))
        kv, bias = compact_text_kv(tuple(kv), [c.shape[0] for c in context])
        return PreparedText(ctx, kv, bias)

    def rope_table(self, latents: list[torch.Tensor], seq_len: int | None = None) -> RotaryTable:
        """Rotation for these latent sizes padded to ``seq_len`` (depends on shapes only, not values)."""
        grids = [self.grid_size(u) for u in latents]
        lens = [math.prod(g) for g in grids]
        seq_len = self._seq_len(lens, seq_len)
        device = latents[0].device
        if self.cfg.modality == "video":
            return video_rotary_table(grids, seq_len, self.head_dim, device,  # type: ignore[arg-type]
                                      self.cfg.rope_temporal_scale)
        return audio_rotary_table(lens, seq_len, self.head_dim, self.cfg.rope_temporal_scale, device)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The patch embedding's dtype: a conv or the first conv, never fp8-quantised (see fp8.py)."""
        return next(self.patch_embedding.parameters()).dtype

    @staticmethod
    def _seq_len(lens: list[int], seq_len: int | None) -> int:
        if seq_len is None:
            return max(lens)
        if seq_len < max(lens):
            raise ValueError(f"seq_len {seq_len} is shorter than the longest sample ({max(lens)} tokens)")
        return seq_len

    # -- input side -------------------------------------------------------------------------------
    def embed(self, stream: Stream) -> TowerTokens:
        """A stream -> padded tokens and the conditioning every block reads."""
        latents, t = stream.latents, stream.t
        n_ctx = stream.context.embedded.shape[0] if isinstance(stream.context, PreparedText) else len(stream.context)
        if n_ctx != len(latents) or t.shape[0] != len(latents):
            raise ValueError(f"batch mismatch: {len(latents)} latents, {n_ctx} contexts, t {tuple(t.shape)}")
        # Samples that are the same tensor (both guidance branches of one step) are embedded once.
        embedded: dict[int, torch.Tensor] = {}
        for u in latents:
            if id(u) not in embedded:
                embedded[id(u)] = self._patch_tokens(u)  # [n_tokens, dim]
        tokens = [embedded[id(u)] for u in latents]
        grid_sizes = [self.grid_size(u) for u in latents]
        lens = [u.shape[0] for u in tokens]
        seq_len = self._seq_len(lens, stream.seq_len)
        x = torch.stack([torch.cat([u, u.new_zeros(seq_len - u.shape[0], u.shape[1])]) for u in tokens])
        # Lengths are known here on the host: a key mask only when some sample is padded.
        padded = min(lens) < seq_len
        seq_lens = torch.tensor(lens, dtype=torch.long, device=x.device) if padded else None

        t_tok = t[:, None] if t.ndim == 1 else _fit_token_timesteps(t, seq_len)
        e, e0 = self.time_conditioning(t_tok)

        context = stream.context if isinstance(stream.context, PreparedText) else self.prepare_text(stream.context)
        rope = stream.rope if stream.rope is not None else self.rope_table(latents, seq_len)
        if rope.cos.shape[1] != seq_len:
            raise ValueError(f"stream.rope covers {rope.cos.shape[1]} tokens but the batch is padded to {seq_len}")
        tok = TowerTokens(x, e, e0, context.embedded, seq_lens, grid_sizes, rope, context.kv, context.kv_bias)
        return tok if self.sequence_parallel is None else self.sequence_parallel.shard(tok)

    def _patch_tokens(self, latent: torch.Tensor) -> torch.Tensor:
        """One latent -> its tokens [n_tokens, dim] in token order."""
        u = self.patch_embedding(latent.unsqueeze(0).to(self.compute_dtype))  # video [1, dim, F, h, w]; audio [1, L, dim]
        return u.flatten(2).transpose(1, 2)[0] if self.cfg.modality == "video" else u[0]

    def time_conditioning(self, t_tok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps [B, 1] or [B, L] -> e [B, 1|L, dim] (head) and e0 [B, 1|L, 6, dim] (blocks).

        Per-token timesteps hold a few distinct levels (t and 0 for a clean prefix). On the CPU each level is
        embedded once; on a GPU counting the levels would read them back to the host (a sync), so every token
        runs the small time MLP instead.
        """
        dtype = self.compute_dtype
        if t_tok.shape[1] > 1 and t_tok.device.type == "cpu":
            levels, index = torch.unique(t_tok, return_inverse=True)
            e = self.time_embedding(sinusoidal_embedding(levels, self.cfg.freq_dim).to(dtype))[index]
        else:
            e = self.time_embedding(sinusoidal_embedding(t_tok, self.cfg.freq_dim).to(dtype))
        return e, self.time_projection(e).unflatten(-1, (6, self.cfg.dim))

    def _pad_text(self, c: torch.Tensor) -> torch.Tensor:
        if c.shape[0] > self.cfg.text_len:
            raise ValueError(f"text context has {c.shape[0]} tokens; this tower takes at most {self.cfg.text_len}")
        return torch.cat([c, c.new_zeros(self.cfg.text_len - c.shape[0], c.shape[1])])

    # -- output side ------------------------------------------------------------------------------
    def unembed(self, tok: TowerTokens, x: torch.Tensor) -> list[torch.Tensor]:
        """Head + unpatchify: [B, L, dim] -> list of latents in the input layout."""
        out = self.head(x, tok.e)  # [B, L, prod(patch) * out_dim]
        if self.sequence_parallel is not None:  # this rank's tokens -> all (the head's output is the narrowest)
            out = self.sequence_parallel.gather(out)
        return [self.unpatchify(u, g) for u, g in zip(out, tok.grid_sizes)]

    def run_block(self, fn, *args):  # noqa: ANN001, ANN201 - thin checkpointing wrapper
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def forward(self, stream: Stream) -> list[torch.Tensor]:
        """This tower alone (no cross-modal attention): a stream -> velocity predictions per sample."""
        tok = self.embed(stream)
        h = tok.x
        for i, block in enumerate(self.blocks):
            kv = None if tok.text_kv is None else tok.text_kv[i]
            with self.resident(i):
                h = self.run_block(block, tok, h, self.attention_backend, kv)
        return self.unembed(tok, h)

    def resident(self, i: int) -> ContextManager:
        """Block i's weights on the compute device for the duration (a no-op unless blocks are streamed)."""
        return contextlib.nullcontext() if self.block_residency is None else self.block_residency.block(i)


def _fit_token_timesteps(t: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Per-token timesteps [B, >= real tokens] -> [B, seq_len]; padding rows take the last real value."""
    if t.shape[1] >= seq_len:
        return t[:, :seq_len]
    return torch.cat([t, t[:, -1:].expand(-1, seq_len - t.shape[1])], dim=1)
