"""Synchformer (Iashin et al. 2024): per-segment video and audio features, then a transformer over
[OFF, video tokens, MOD, audio tokens] whose OFF output is classified into audio-video offsets.

    video [B, S, 16, 3, H, W] -> MotionFormer -> [B, S, 8, D] -> vproj -+
    mel   [B, S, 66, 128]     -> AST          -> [B, S, 6, D] -> aproj -+-> offset transformer -> logits [B, 21]

Hand-written (no installed library ships it, see ``video.py``/``audio.py``); attribute names are those of the
released state dict, which ``load_synchformer`` reads strictly.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from ovi.eval.synchformer.audio import AudioFeatures
from ovi.eval.synchformer.config import RELEASE, SynchformerConfig
from ovi.eval.synchformer.layers import attend, merge_heads, split_heads
from ovi.eval.synchformer.video import MotionFormer


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.key, self.query, self.value, self.proj = (nn.Linear(width, width) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(f(x), self.heads) for f in (self.query, self.key, self.value))
        return self.proj(merge_heads(attend(q, k, v)))


class Block(nn.Module):
    """Pre-norm block; ``mlp`` is a Sequential so its linears are the checkpoint's ``mlp.0`` and ``mlp.2``."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class _Table(nn.Module):
    """Holds a learned position table as ``pos_emb`` (the checkpoint's ``transformer.pos_emb_cfg.pos_emb``)."""

    def __init__(self, tokens: int, width: int) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.randn(1, tokens, width))


class OffsetTransformer(nn.Module):
    def __init__(self, cfg: SynchformerConfig) -> None:
        super().__init__()
        d = cfg.width
        self.vis_in_lnorm, self.aud_in_lnorm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.OFF_tok = nn.Parameter(torch.randn(1, 1, d))  # its output is classified
        self.MOD_tok = nn.Parameter(torch.randn(1, 1, d))  # separates the two modalities
        self.pos_emb_cfg = _Table(cfg.sync_tokens, d)
        self.blocks = nn.Sequential(*(Block(d, cfg.sync_heads, cfg.mlp_ratio) for _ in range(cfg.sync_depth)))
        self.ln_f = nn.LayerNorm(d)
        self.off_head = nn.Linear(d, cfg.window.classes)

    def forward(self, vis: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
        """vis [B, S*tv, D], aud [B, S*ta, D] -> offset logits [B, classes]."""
        b = vis.shape[0]
        x = torch.cat([self.OFF_tok.expand(b, -1, -1), self.vis_in_lnorm(vis),
                       self.MOD_tok.expand(b, -1, -1), self.aud_in_lnorm(aud)], dim=1)
        x = self.ln_f(self.blocks(x + self.pos_emb_cfg.pos_emb))
        return self.off_head(x[:, 0])


class Synchformer(nn.Module):
    def __init__(self, cfg: SynchformerConfig = RELEASE) -> None:
        super().__init__()
        self.cfg = cfg
        self.vfeat_extractor = MotionFormer(cfg)
        self.afeat_extractor = AudioFeatures(cfg)
        self.vproj = nn.Linear(cfg.width, cfg.width)
        self.aproj = nn.Linear(cfg.width, cfg.width)
        self.transformer = OffsetTransformer(cfg)

    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, S, frames, 3, H, W] in [-1, 1] -> [B, S, tv, D]."""
        b, s = video.shape[:2]
        return self.vfeat_extractor(video.flatten(0, 1).transpose(1, 2)).unflatten(0, (b, s))

    def audio_features(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, S, T frames, F bins] -> [B, S, ta, D]."""
        b, s = mel.shape[:2]
        return self.afeat_extractor(mel.flatten(0, 1)).unflatten(0, (b, s))

    def offset_logits(self, vfeat: torch.Tensor, afeat: torch.Tensor) -> torch.Tensor:
        """Features of ``window.segments`` aligned segments -> logits [B, classes]."""
        return self.transformer(self.vproj(vfeat).flatten(1, 2), self.aproj(afeat).flatten(1, 2))

    def forward(self, video: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        return self.offset_logits(self.video_features(video), self.audio_features(mel))


def _read(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # The authors' training checkpoint (24-01-04T16-39-21.pt) also pickles its config objects; the file
        # is one the user passed by path, as for the other metrics' released checkpoints.
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):  # the authors' {"model": ..., ...}
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a Synchformer state dict (or a checkpoint with 'model'), got "
                         f"{type(obj).__name__}")
    return obj


def load_synchformer(path: str | Path, cfg: SynchformerConfig = RELEASE) -> Synchformer:
    """A Synchformer with the weights of ``path``: MMAudio's ``synchformer_state_dict.pth`` or the authors'
    ``24-01-04T16-39-21.pt``. Keys must match exactly; a mismatch names the first differing keys."""
    state = _read(Path(path))
    model = Synchformer(cfg)
    mine = model.state_dict()
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in mine.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        raise ValueError(f"{path} is not a Synchformer state dict of this configuration: "
                         f"{len(missing)} missing (first: {missing[:5]}), {len(unexpected)} unexpected "
                         f"(first: {unexpected[:5]}), {len(shapes)} of another shape (first: {shapes[:3]})")
    model.load_state_dict(state, strict=True)
    return model.eval()
