"""What a tower receives for one modality: latents, per-token timesteps, text, positions and a loss mask.

A :class:`Stream` is plain data, so every mode is a choice of values rather than a flag of the model:
text-to-audio-video gives both towers a noisy stream with one timestep per sample; image-to-video sets the
first latent frame's tokens to t = 0 (:func:`clean_prefix_timesteps`); a conditioning modality (V2A's video,
A2V's audio) is a stream whose timesteps are all 0 and whose loss mask is empty; a single-tower run passes
``None`` for the other stream.

Text and rotary tables do not depend on the latents or the step, so :meth:`Tower.prepare_text` and
:meth:`Tower.rope_table` compute them once and the stream carries the results (``context`` as
:class:`PreparedText`, ``rope``); a stream holding raw text embeddings is prepared on the fly, with the same
numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ovi.models.rope import RotaryTable


# Per block: the text keys and values [B, L_kv, H, D] its cross-attention reads (k already RMS-normed).
TextKV = tuple[tuple[torch.Tensor, torch.Tensor], ...]


@dataclass(frozen=True)
class PreparedText:
    """Text embeddings after the tower's text MLP: [B, text_len, dim] (zero-padded rows included).

    ``kv``: optionally every block's text keys/values, computed once per generation (sampling); None when
    the blocks project the text themselves (training, where the projections learn). Cached K/V are compacted
    (:func:`compact_text_kv`): the padded rows of a prompt are one key repeated, so they are kept once and
    ``kv_bias`` [B, L_kv] adds log(repeats) to its score (and -inf to rows past a sample's keys).
    """

    embedded: torch.Tensor
    kv: TextKV | None = None
    kv_bias: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.embedded.shape[0]

    @staticmethod
    def cat(parts: list[PreparedText]) -> PreparedText:
        """Stack branches along the batch (e.g. positive and negative prompt for a batched CFG forward)."""
        embedded = torch.cat([p.embedded for p in parts])
        if any(p.kv is None for p in parts):
            return PreparedText(embedded)
        if any(p.kv_bias is None for p in parts):  # full-length K/V (half precision): same width already
            kv = tuple((torch.cat([p.kv[i][0] for p in parts]), torch.cat([p.kv[i][1] for p in parts]))  # type: ignore[index]
                       for i in range(len(parts[0].kv)))  # type: ignore[arg-type]
            return PreparedText(embedded, kv)
        width = max(p.kv_bias.shape[1] for p in parts)  # type: ignore[union-attr]
        kv = tuple(
            (torch.cat([_pad_rows(p.kv[i][0], width) for p in parts]),  # type: ignore[index]
             torch.cat([_pad_rows(p.kv[i][1], width) for p in parts]))  # type: ignore[index]
            for i in range(len(parts[0].kv))  # type: ignore[arg-type]
        )
        bias = torch.cat([_pad_rows(p.kv_bias, width, float("-inf")) for p in parts])  # type: ignore[arg-type]
        return PreparedText(embedded, kv, bias)


def compact_text_kv(kv: TextKV, lens: list[int]) -> tuple[TextKV, torch.Tensor]:
    """Per block K/V over the full padded text [B, text_len, H, D] -> the real rows plus one padded row.

    Softmax over n copies of one key (score s, value v) equals one copy with score s + log(n): the same
    attention as the released model's, over ``max(len + 1)`` keys instead of ``text_len``.
    Returns the compacted K/V and the additive score bias [B, L_kv] (float32).
    """
    text_len = kv[0][0].shape[1]
    width = max(min(n + 1, text_len) for n in lens)
    bias = torch.full((len(lens), width), float("-inf"), device=kv[0][0].device)
    for b, n in enumerate(lens):
        bias[b, :n] = 0.0
        if n < text_len:
            bias[b, n] = math.log(text_len - n)  # the n-th row stands for all text_len - n padded rows
    return tuple((k[:, :width], v[:, :width]) for k, v in kv), bias


def _pad_rows(x: torch.Tensor, width: int, value: float = 0.0) -> torch.Tensor:
    """Pad dim 1 of x to ``width`` with ``value``."""
    if x.shape[1] == width:
        return x
    pad = x.new_full((x.shape[0], width - x.shape[1], *x.shape[2:]), value)
    return torch.cat([x, pad], dim=1)


@dataclass
class Stream:
    """One modality's batch.

    ``latents``: per sample, video ``[C, F, H, W]`` or audio ``[L, C]`` (sizes may differ).
    ``t``: ``1000 * sigma`` per sample ``[B]``, or per token ``[B, L]`` in the tower's token order (video
    tokens run frame by frame, row-major; L is at least the longest sample's token count). t = 0 marks a
    clean (conditioning) token.
    ``context``: per sample text embeddings ``[L_text, text_dim]``, or the tower's :class:`PreparedText`.
    ``seq_len``: pad every sample to this many tokens (None: the longest sample).
    ``rope``: a rotary table from :meth:`Tower.rope_table` for these latent sizes and ``seq_len`` (None:
    built on the fly).
    ``loss_mask``: optional ``[B, L]`` bool, True where a token is trained on (see :func:`token_loss_mask`).
    """

    latents: list[torch.Tensor]
    t: torch.Tensor
    context: list[torch.Tensor] | PreparedText
    seq_len: int | None = None
    rope: RotaryTable | None = None
    loss_mask: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return len(self.latents)

    def with_latents(self, latents: list[torch.Tensor], t: torch.Tensor | None = None) -> Stream:
        """The same conditioning around new latents (and timesteps): one denoising step's input."""
        return replace(self, latents=latents, t=self.t if t is None else t)

    def with_context(self, context: list[torch.Tensor] | PreparedText) -> Stream:
        return replace(self, context=context)


def clean_prefix_timesteps(
    t: torch.Tensor, token_counts: list[int], tokens_per_unit: list[int], clean_units: int, seq_len: int | None = None
) -> torch.Tensor:
    """Per-token timesteps ``[B, L]`` from per-sample ``t`` [B], with the first ``clean_units`` units at t = 0.

    A unit is a latent frame for video (``tokens_per_unit`` = tokens per latent frame, (H/2)*(W/2)) or one
    latent for audio (1). ``clean_units=1`` on video is image-to-video; larger values express extension from a
    clean prefix.
    """
    if t.ndim != 1 or t.shape[0] != len(token_counts):
        raise ValueError(f"t must be [B] with B = {len(token_counts)} samples, got {tuple(t.shape)}")
    length = max(token_counts) if seq_len is None else seq_len
    t_tok = t[:, None].expand(-1, length).clone()
    for b, per_unit in enumerate(tokens_per_unit):
        t_tok[b, : clean_units * per_unit] = 0
    return t_tok


def token_loss_mask(t_tok: torch.Tensor, token_counts: list[int]) -> torch.Tensor:
    """``[B, L]`` bool: real (unpadded) tokens that are not clean conditioning (t != 0)."""
    real = torch.arange(t_tok.shape[1], device=t_tok.device)[None, :] < torch.tensor(token_counts, device=t_tok.device)[:, None]
    return real & (t_tok != 0)
