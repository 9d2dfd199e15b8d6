"""One Wan2.2-TI2V-5B-shaped DiT tower, for video (3-D latents) or audio (1-D latents).

Data flow of a standalone tower (``Tower.forward``; the fusion model interleaves two of them):
    latents (list, per-sample sizes) -> patch embedding -> zero-pad to seq_len      x  [B, L, dim]
    t [B] -> sinusoid -> time MLP -> e [B, L|1, dim] -> 6-way projection e0 [B, L|1, 6, dim]
    text [L_i, 4096] -> zero-pad to text_len -> text MLP                           ctx [B, text_len, dim]
    blocks: x += gate * SelfAttn(mod(LN x)); x += CrossAttn(norm3 x, ctx[, other tower]); x += gate * FFN(mod(LN x))
    head(x, e) -> unpatchify -> list of latents
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ovi.config import TowerConfig
from ovi.models.attention import attention
from ovi.models.layers import (
    FeedForward,
    Head,
    LayerNorm,
    Linear,
    Modulation,
    RMSNorm,
    audio_patch_embedding,
    modulate,
    sinusoidal_embedding,
)
from ovi.models.rope import RotaryTable, apply_rotary, audio_rotary_table, video_rotary_table


@dataclass
class TowerTokens:
    """A padded batch inside a tower, plus everything its blocks need."""

    x: torch.Tensor  # [B, L, dim]
    e: torch.Tensor  # [B, L|1, dim] time embedding (head modulation)
    e0: torch.Tensor  # [B, L|1, 6, dim] per-block modulation base
    context: torch.Tensor  # [B, text_len, dim]
    seq_lens: torch.Tensor  # [B] true token counts
    grid_sizes: list[tuple[int, ...]]  # per sample: (F, H/2, W/2) for video, (L,) for audio
    rope: RotaryTable


@dataclass
class CrossModalTarget:
    """The other tower's hidden states as seen by this tower's cross-modal attention."""

    x: torch.Tensor  # [B, L_other, dim_other]
    seq_lens: torch.Tensor  # [B]
    rope: RotaryTable  # the other tower's rotation, applied to its keys


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (Linear(dim, dim) for _ in range(4))
        # q/k RMS-normed over the full width before the head split.
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1))  # [B, L, dim] -> [B, L, H, D]

    def forward(self, x: torch.Tensor, seq_lens: torch.Tensor, rope: RotaryTable, backend: str) -> torch.Tensor:
        q = apply_rotary(self.heads(self.norm_q(self.q(x))), rope)
        k = apply_rotary(self.heads(self.norm_k(self.k(x))), rope)
        v = self.heads(self.v(x))
        return self.o(attention(q, k, v, k_lens=seq_lens, backend=backend).flatten(2))


class CrossAttention(SelfAttention):
    """Text cross-attention; with ``fusion=True`` also cross-modal attention to the other tower.

    Both attentions share the query projection and the output projection ``o``; their outputs are
    summed before ``o``. Text keys are not masked: contexts are zero-padded to ``text_len`` and the
    released model was trained attending to those padded rows.
    """

    def __init__(self, dim: int, num_heads: int, eps: float, fusion: bool, target_dim: int | None = None) -> None:
        super().__init__(dim, num_heads, eps)
        self.fusion = fusion
        if fusion:
            target_dim = target_dim or dim
            self.k_fusion, self.v_fusion = Linear(target_dim, dim), Linear(target_dim, dim)
            self.pre_attn_norm_fusion = LayerNorm(target_dim, eps, affine=True)
            self.norm_k_fusion = RMSNorm(dim, eps)

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        rope: RotaryTable,
        target: CrossModalTarget | None,
        backend: str,
    ) -> torch.Tensor:
        q = self.heads(self.norm_q(self.q(x)))
        k = self.heads(self.norm_k(self.k(context)))
        out = attention(q, k, self.heads(self.v(context)), backend=backend)
        if target is not None:
            t = self.pre_attn_norm_fusion(target.x)
            k_t = apply_rotary(self.heads(self.norm_k_fusion(self.k_fusion(t))), target.rope)
            v_t = self.heads(self.v_fusion(t))
            out = out + attention(apply_rotary(q, rope), k_t, v_t, k_lens=target.seq_lens, backend=backend)
        return self.o(out.flatten(2))


class TowerBlock(nn.Module):
    def __init__(self, cfg: TowerConfig, fusion: bool) -> None:
        super().__init__()
        self.norm1 = LayerNorm(cfg.dim, cfg.eps)
        self.self_attn = SelfAttention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm3 = LayerNorm(cfg.dim, cfg.eps, affine=True)
        self.cross_attn = CrossAttention(cfg.dim, cfg.num_heads, cfg.eps, fusion)
        self.norm2 = LayerNorm(cfg.dim, cfg.eps)
        self.ffn = FeedForward(cfg.dim, cfg.ffn_dim)
        self.modulation = Modulation(cfg.dim)

    def self_attention(self, tok: TowerTokens, x: torch.Tensor, backend: str) -> torch.Tensor:
        shift, scale, gate = self.modulation(tok.e0)[:3]
        return x + gate * self.self_attn(modulate(self.norm1(x), shift, scale), tok.seq_lens, tok.rope, backend)

    def cross_attention_ffn(
        self, tok: TowerTokens, x: torch.Tensor, target: CrossModalTarget | None, backend: str
    ) -> torch.Tensor:
        shift, scale, gate = self.modulation(tok.e0)[3:]
        x = x + self.cross_attn(self.norm3(x), tok.context, tok.rope, target, backend)
        return x + gate * self.ffn(modulate(self.norm2(x), shift, scale))

    def forward(self, tok: TowerTokens, x: torch.Tensor, backend: str) -> torch.Tensor:
        return self.cross_attention_ffn(tok, self.self_attention(tok, x, backend), None, backend)


class Tower(nn.Module):
    """A Wan2.2-shaped DiT. ``fusion=True`` adds the cross-modal K/V layers the fusion model uses."""

    def __init__(self, cfg: TowerConfig, fusion: bool = False) -> None:
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
        self.blocks = nn.ModuleList(TowerBlock(cfg, fusion) for _ in range(cfg.num_layers))
        self.head = Head(cfg.dim, cfg.out_dim, cfg.patch_size, cfg.eps)
        self.gradient_checkpointing = False
        self.attention_backend = "auto"

    # -- input side -------------------------------------------------------------------------------
    def embed(
        self,
        latents: list[torch.Tensor],
        t: torch.Tensor,
        context: list[torch.Tensor],
        seq_len: int | None = None,
        first_frame_is_clean: bool = False,
    ) -> TowerTokens:
        """Latents (video [C, F, H, W] / audio [L, C] each) -> padded tokens and conditioning."""
        if len(latents) != len(context) or t.shape[0] != len(latents):
            raise ValueError(f"batch mismatch: {len(latents)} latents, {len(context)} contexts, t {tuple(t.shape)}")
        dtype = next(self.patch_embedding.parameters()).dtype  # a conv: never fp8-quantised
        if self.cfg.modality == "video":
            embedded = [self.patch_embedding(u.unsqueeze(0).to(dtype)) for u in latents]  # [1, dim, F, h, w]
            grid_sizes = [tuple(u.shape[2:]) for u in embedded]
            tokens = [u.flatten(2).transpose(1, 2)[0] for u in embedded]  # [F*h*w, dim]
        else:
            tokens = [self.patch_embedding(u.unsqueeze(0).to(dtype))[0] for u in latents]  # [L, dim]
            grid_sizes = [(u.shape[0],) for u in tokens]
        lens = [u.shape[0] for u in tokens]
        seq_len = max(lens) if seq_len is None else seq_len
        if seq_len < max(lens):
            raise ValueError(f"seq_len {seq_len} is shorter than the longest sample ({max(lens)} tokens)")
        x = torch.stack([torch.cat([u, u.new_zeros(seq_len - u.shape[0], u.shape[1])]) for u in tokens])
        seq_lens = torch.tensor(lens, dtype=torch.long, device=x.device)

        # Timesteps per token only differ when the first video frame is clean (t = 0 there).
        if first_frame_is_clean and self.cfg.modality == "video":
            t_tok = t[:, None].expand(-1, seq_len).clone()
            for b, g in enumerate(grid_sizes):
                t_tok[b, : g[1] * g[2]] = 0
        else:
            t_tok = t[:, None]
        levels, index = torch.unique(t_tok, return_inverse=True)  # embed each distinct timestep once
        e = self.time_embedding(sinusoidal_embedding(levels, self.cfg.freq_dim).to(dtype))[index]
        e0 = self.time_projection(e).unflatten(-1, (6, self.cfg.dim))

        ctx = torch.stack([self._pad_text(c.to(dtype)) for c in context])
        if self.cfg.modality == "video":
            rope = video_rotary_table(grid_sizes, seq_len, self.head_dim, x.device)  # type: ignore[arg-type]
        else:
            rope = audio_rotary_table(lens, seq_len, self.head_dim, self.cfg.rope_temporal_scale, x.device)
        return TowerTokens(x, e, e0, self.text_embedding(ctx), seq_lens, grid_sizes, rope)

    def _pad_text(self, c: torch.Tensor) -> torch.Tensor:
        if c.shape[0] > self.cfg.text_len:
            raise ValueError(f"text context has {c.shape[0]} tokens; this tower takes at most {self.cfg.text_len}")
        return torch.cat([c, c.new_zeros(self.cfg.text_len - c.shape[0], c.shape[1])])

    # -- output side ------------------------------------------------------------------------------
    def unembed(self, tok: TowerTokens, x: torch.Tensor) -> list[torch.Tensor]:
        """Head + unpatchify: [B, L, dim] -> list of latents in the input layout."""
        out = self.head(x, tok.e)  # [B, L, prod(patch) * out_dim]
        c = self.cfg.out_dim
        results = []
        for u, g in zip(out, tok.grid_sizes):
            u = u[: math.prod(g)]
            if self.cfg.modality == "video":
                pt, ph, pw = self.cfg.patch_size
                f, h, w = g
                u = u.view(f, h, w, pt, ph, pw, c).permute(6, 0, 3, 1, 4, 2, 5)  # [C, f, pt, h, ph, w, pw]
                u = u.reshape(c, f * pt, h * ph, w * pw)
            results.append(u)
        return results

    def run_block(self, fn, *args):  # noqa: ANN001, ANN201 - thin checkpointing wrapper
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def forward(
        self,
        x: list[torch.Tensor],
        t: torch.Tensor,
        context: list[torch.Tensor],
        seq_len: int | None = None,
        first_frame_is_clean: bool = False,
    ) -> list[torch.Tensor]:
        """This tower alone (no cross-modal attention): latents -> velocity predictions."""
        tok = self.embed(x, t, context, seq_len, first_frame_is_clean)
        h = tok.x
        for block in self.blocks:
            h = self.run_block(block, tok, h, self.attention_backend)
        return self.unembed(tok, h)
