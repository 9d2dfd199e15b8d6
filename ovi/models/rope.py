"""Rotary position embeddings: 3-D (frame, row, column) for video, scaled 1-D for audio.

Head dim ``d`` is split into pairs; pairs are interleaved (``x[2i], x[2i+1]`` form one complex
number). Video rotates all ``d/2`` pairs: the first ``d/2 - 2*(d/2//3)`` by frame index, then
``d/2//3`` by row and ``d/2//3`` by column. Audio rotates only the frame-axis pairs (the same
frequencies as the video frame axis) by ``l * rope_temporal_scale``, so audio token ``l`` sits at
video latent frame ``0.19676 * l`` in the released model; the remaining dims pass through. A video tower's
own ``rope_temporal_scale`` (1.0 in the release) multiplies its frame positions the same way, so in general
audio token ``l`` sits at video latent frame ``l * audio_scale / video_scale``.

Angles are computed in float64 (positions up to 1024 times frequencies lose precision in float32);
the rotation itself runs in at least float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ovi.models.layers import ROPE_THETA


def axis_split(head_dim: int) -> tuple[int, int, int]:
    """Pairs per axis (frame, row, column): 22/21/21 for head_dim 128."""
    pairs = head_dim // 2
    return pairs - 2 * (pairs // 3), pairs // 3, pairs // 3


def rope_angles(positions: torch.Tensor, n_dims: int, scale: float = 1.0) -> torch.Tensor:
    """Angles ``pos * scale / theta^(2k/n_dims)`` for k < n_dims/2: positions [N] -> [N, n_dims/2] float64."""
    inv_freq = 1.0 / torch.pow(
        ROPE_THETA, torch.arange(0, n_dims, 2, dtype=torch.float64, device=positions.device) / n_dims
    )
    return torch.outer(positions.to(torch.float64) * scale, inv_freq)


@dataclass
class RotaryTable:
    """Per-token rotation for a padded batch: cos/sin [B, L, 1, P] acting on the first P pairs.

    B is 1 when every sample has the same positions (it broadcasts over a batch of guidance branches).
    """

    cos: torch.Tensor
    sin: torch.Tensor

    def __post_init__(self) -> None:
        # cos + i sin: one complex multiply rotates all pairs (instead of four products, a stack and a cat).
        self.unit = torch.complex(self.cos, self.sin)  # [B, L, 1, P] complex64

    @property
    def num_pairs(self) -> int:
        return self.cos.shape[-1]


def video_rotary_table(
    grid_sizes: list[tuple[int, int, int]], seq_len: int, head_dim: int, device: torch.device,
    temporal_scale: float = 1.0,
) -> RotaryTable:
    """Rotation for tokens laid out (f, h, w) row-major per sample; padding rows are the identity.

    Frame f is rotated as position ``f * temporal_scale`` (rows and columns by their index)."""
    nf, nh, nw = axis_split(head_dim)
    angles = torch.zeros(len(grid_sizes), seq_len, nf + nh + nw, dtype=torch.float64, device=device)
    for b, (f, h, w) in enumerate(grid_sizes):
        # Each axis uses its own frequency ladder over 2*pairs dims, as three separate 1-D RoPEs.
        af = rope_angles(torch.arange(f, device=device), 2 * nf, temporal_scale)[:, None, None, :].expand(f, h, w, nf)
        ah = rope_angles(torch.arange(h, device=device), 2 * nh)[None, :, None, :].expand(f, h, w, nh)
        aw = rope_angles(torch.arange(w, device=device), 2 * nw)[None, None, :, :].expand(f, h, w, nw)
        angles[b, : f * h * w] = torch.cat([af, ah, aw], dim=-1).reshape(f * h * w, -1)
    return _table(angles)


def audio_rotary_table(
    lengths: list[int], seq_len: int, head_dim: int, scale: float, device: torch.device
) -> RotaryTable:
    """1-D rotation of the frame-axis pairs only, positions scaled by ``scale``."""
    nf, _, _ = axis_split(head_dim)
    angles = torch.zeros(len(lengths), seq_len, nf, dtype=torch.float64, device=device)
    for b, n in enumerate(lengths):
        angles[b, :n] = rope_angles(torch.arange(n, device=device), 2 * nf, scale)
    return _table(angles)


def _table(angles: torch.Tensor) -> RotaryTable:
    """angles [B, L, P] float64 -> float32 cos/sin [B, L, 1, P] (broadcast over heads)."""
    return RotaryTable(cos=angles.cos().float().unsqueeze(2), sin=angles.sin().float().unsqueeze(2))


def apply_rotary(x: torch.Tensor, table: RotaryTable) -> torch.Tensor:
    """Rotate interleaved pairs of x [B, L, H, D] by ``table``; dims past 2P pass through."""
    p = table.num_pairs
    dt = torch.promote_types(x.dtype, torch.float32)
    pairs = torch.view_as_complex(x[..., : 2 * p].to(dt).unflatten(-1, (p, 2)).contiguous())  # [B, L, H, P]
    unit = table.unit if dt == torch.float32 else table.unit.to(torch.complex128)
    rotated = torch.view_as_real(pairs * unit).flatten(-2).to(x.dtype)
    return rotated if 2 * p == x.shape[-1] else torch.cat([rotated, x[..., 2 * p :]], dim=-1)
