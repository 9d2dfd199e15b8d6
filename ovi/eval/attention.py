"""Cross-modal attention maps (the paper's Figure 3): where audio tokens look in the video and the reverse.

Forward hooks on chosen blocks' ``cross_attn`` modules read the inputs of each call (queries' hidden
states, the other tower's states and both rotary tables) and recompute the cross-modal attention
probabilities the module used, head-averaged; the model is not modified and runs at its normal speed
otherwise. Maps are [B, L_query, L_key]; ``audio_to_video_time`` folds the video keys over space into the
audio x video-frame matrix (RoPE's "diagonal"), ``video_heatmaps`` folds the audio queries into one spatial
heatmap per latent frame. ``render_*`` write PNGs.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ovi.models.rope import apply_rotary


@dataclass
class CrossAttentionMaps:
    audio_to_video: dict[int, torch.Tensor] = field(default_factory=dict)  # block -> [B, L_audio, L_video]
    video_to_audio: dict[int, torch.Tensor] = field(default_factory=dict)  # block -> [B, L_video, L_audio]

    def mean(self, which: str = "audio_to_video") -> torch.Tensor:
        maps = getattr(self, which)
        if not maps:
            raise ValueError(f"no {which} maps recorded; run the fusion model with both streams inside the context")
        return torch.stack(list(maps.values())).mean(0)


def cross_modal_probs(module: torch.nn.Module, x: torch.Tensor, rope, target) -> torch.Tensor:
    """The head-averaged cross-modal attention probabilities [B, L_q, L_k] of one CrossAttention call."""
    q = apply_rotary(module.heads(module.norm_q(module.q(x))), rope)  # [B, Lq, H, D]
    t = module.pre_attn_norm_fusion(target.x)
    k = apply_rotary(module.heads(module.norm_k_fusion(module.k_fusion(t))), target.rope)  # [B, Lk, H, D]
    logits = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) / math.sqrt(q.shape[-1])
    if target.seq_lens is not None:  # None: no padded keys
        keep = torch.arange(k.shape[1], device=k.device)[None] < target.seq_lens[:, None].to(k.device)  # [B, Lk]
        logits = logits.masked_fill(~keep[:, None, None], float("-inf"))
    return logits.softmax(-1).mean(1)


@contextlib.contextmanager
def record_cross_attention(model: torch.nn.Module, blocks: Sequence[int] | None = None
                           ) -> Iterator[CrossAttentionMaps]:
    """Inside the context, every fusion forward stores the chosen blocks' maps (all blocks when None);
    the last forward's maps are kept."""
    maps = CrossAttentionMaps()
    n = len(model.video_model.blocks)
    chosen = range(n) if blocks is None else blocks
    handles = []

    def hook(store: dict, i: int):
        def fn(module, args, kwargs, output):
            x, _context, rope, target = (list(args) + [kwargs.get(k) for k in ("context", "rope", "target")])[:4]
            if target is not None:
                with torch.no_grad():
                    store[i] = cross_modal_probs(module, x, rope, target).cpu()
        return fn

    for i in chosen:
        handles.append(model.audio_model.blocks[i].cross_attn.register_forward_hook(
            hook(maps.audio_to_video, i), with_kwargs=True))
        handles.append(model.video_model.blocks[i].cross_attn.register_forward_hook(
            hook(maps.video_to_audio, i), with_kwargs=True))
    try:
        yield maps
    finally:
        for h in handles:
            h.remove()


def audio_to_video_time(probs: torch.Tensor, grid: tuple[int, int, int]) -> np.ndarray:
    """[L_audio, L_video] probabilities -> [L_audio, F] attention mass per video latent frame."""
    f, h, w = grid
    return probs[:, : f * h * w].reshape(probs.shape[0], f, h * w).sum(-1).numpy()


def video_heatmaps(probs: torch.Tensor, grid: tuple[int, int, int]) -> np.ndarray:
    """[L_audio, L_video] -> [F, h, w]: per latent frame, the attention the audio tokens aligned with that
    frame (same share of the clip) pay to each spatial token, normalised per frame."""
    f, h, w = grid
    la = probs.shape[0]
    grid_maps = probs[:, : f * h * w].reshape(la, f, h, w)
    out = np.zeros((f, h, w), np.float32)
    for j in range(f):
        lo, hi = int(j * la / f), max(int((j + 1) * la / f), int(j * la / f) + 1)
        m = grid_maps[lo:hi, j].mean(0).numpy()
        out[j] = m / max(float(m.max()), 1e-12)
    return out


def render_time_matrix(matrix: np.ndarray, path: str | Path, title: str = "audio -> video-frame attention") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(matrix, aspect="auto", origin="lower", cmap="magma")
    ax.set_xlabel("video latent frame")
    ax.set_ylabel("audio token")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def overlay(frames: np.ndarray, heatmaps: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 frames [T, H, W, 3] with the heatmaps [F, h, w] (one per latent frame, spread over its frames)
    upsampled and blended in red."""
    t, hh, ww = frames.shape[:3]
    per_frame = heatmaps[np.minimum((np.arange(t) * len(heatmaps)) // t, len(heatmaps) - 1)]  # [T, h, w]
    up = torch.nn.functional.interpolate(torch.from_numpy(per_frame)[:, None], size=(hh, ww), mode="bilinear",
                                         align_corners=False)[:, 0].numpy()
    red = np.zeros_like(frames, dtype=np.float32)
    red[..., 0] = 255.0
    a = (alpha * up)[..., None]
    return (frames * (1 - a) + red * a).clip(0, 255).astype(np.uint8)


def render_overlays(frames: np.ndarray, heatmaps: np.ndarray, out: str | Path, fps: int | None = None) -> list[Path]:
    """One PNG per latent frame (its first video frame, overlaid), and an mp4 of all frames when fps is given."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    blended = overlay(frames, heatmaps)
    t = len(frames)
    written = []
    for j in range(len(heatmaps)):
        path = out / f"attention_frame{j:03d}.png"
        Image.fromarray(blended[min(j * t // len(heatmaps), t - 1)]).save(path)
        written.append(path)
    if fps:
        from ovi.media import write_mp4

        written.append(write_mp4(out / "attention.mp4", blended, None, fps=fps))
    return written
