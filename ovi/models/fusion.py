"""The Ovi fusion model: a video tower and an audio tower that exchange information in every block.

Per fusion block i (the order matters and matches the released model):
  1. audio self-attention            2. video self-attention
  3. audio: text + cross-modal attention reading the video after step 2, then the audio FFN
  4. video: text + cross-modal attention reading the audio from *before* step 3, then the video FFN
Cross-modal queries are rotated with the querying tower's RoPE and keys with the other tower's, so
audio token l (at video frame 0.19676*l) and video frame f meet on one time axis.
"""
from __future__ import annotations

from dataclasses import replace
from typing import ContextManager, Sequence

import torch
from torch import nn

from ovi.config import FusionConfig
from ovi.models.cache import StepCache
from ovi.models.stream import Stream
from ovi.models.tower import CrossModalTarget, Tower, TowerTokens, take_rows

# Released init scales the video tower's fresh cross-modal projections down so the pretrained video
# tower is barely perturbed at the start of fusion training.
VIDEO_FUSION_INIT_SCALE = 0.1


class FusionModel(nn.Module):
    # Fusion block i is video_model.blocks[i] + audio_model.blocks[i], run (and checkpointed) together.
    no_split_modules = Tower.no_split_modules
    is_cross_modal = staticmethod(Tower.is_cross_modal)
    is_high_precision = staticmethod(Tower.is_high_precision)

    def __init__(self, cfg: FusionConfig, init: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.video_model = Tower(cfg.video, fusion=True, target_dim=cfg.audio.dim)
        self.audio_model = Tower(cfg.audio, fusion=True, target_dim=cfg.video.dim)
        if init:
            self.init_weights()

    @property
    def gradient_checkpointing(self) -> bool:
        return self.video_model.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, on: bool) -> None:
        self.video_model.gradient_checkpointing = self.audio_model.gradient_checkpointing = on

    def set_attention_backend(self, backend: str) -> None:
        self.video_model.attention_backend = self.audio_model.attention_backend = backend

    def init_weights(self) -> None:
        """Reference initialisation; a fresh model outputs exactly zero (zero-initialised heads)."""
        for tower in (self.video_model, self.audio_model):
            init_tower_weights(tower)
        for name, m in self.video_model.named_modules():
            if isinstance(m, nn.Linear) and Tower.is_cross_modal(name):  # k_fusion / v_fusion
                with torch.no_grad():
                    m.weight.mul_(VIDEO_FUSION_INIT_SCALE)

    def forward(
        self,
        video: Stream | None,
        audio: Stream | None,
        slg_layer: int | None = None,
        slg_rows: Sequence[int] | None = None,
        cache: StepCache | None = None,
        rows_share_input: bool = False,
    ) -> tuple[list[torch.Tensor] | None, list[torch.Tensor] | None]:
        """Velocity predictions per sample for a video stream (latents [48, F, H, W]) and an audio stream ([L, 20]).

        Each stream carries its own timesteps (``1000 * sigma``, per sample or per token; t = 0 marks a clean
        conditioning token, e.g. the first latent frame in image-to-video), text and positions. With one
        stream ``None`` the other tower runs alone, without cross-modal attention. ``slg_layer`` skips that
        whole fusion block (both towers), for skip-layer guidance on the negative branch; None or 0 disables it.
        ``slg_rows``: the samples that skip it (None: all), so one batched forward can hold the positive and
        the negative guidance branch. ``cache``: opt-in step caching (see :class:`~ovi.models.cache.StepCache`).
        ``rows_share_input``: every sample has the same latents and timesteps and only the text differs (the
        guidance branches of one step); the first block's text-free work then runs once for all rows.
        """
        if video is None and audio is None:
            raise ValueError("pass a video stream, an audio stream, or both")
        if audio is None:
            return self.video_model(video), None
        if video is None:
            return None, self.audio_model(audio)
        if slg_layer and not 0 < slg_layer < len(self.video_model.blocks):
            raise ValueError(f"slg_layer {slg_layer} out of range 1..{len(self.video_model.blocks) - 1}")

        if rows_share_input and not all(len({id(u) for u in s.latents}) == 1 for s in (video, audio)):
            raise ValueError("rows_share_input needs one latent object per stream repeated over the rows")
        vt, at = self.video_model.embed(video), self.audio_model.embed(audio)
        v, a = vt.x, at.x
        first_out: tuple[torch.Tensor, torch.Tensor] | None = None
        for i in range(len(self.video_model.blocks)):
            if i == 1 and cache is not None:  # after the first block: reuse the other blocks' cached residual?
                first_out = (v, a)
                if cache.can_reuse((v - vt.x, a - at.x)):
                    v, a = cache.reuse(v, a)
                    break
            with self._resident(i):
                if slg_layer and i == slg_layer:
                    v, a = self._skip_block(i, vt, at, v, a, slg_rows)
                else:
                    shared = i == 0 and rows_share_input and v.shape[0] > 1
                    v, a = self.video_model.run_block(self._fusion_block, i, vt, at, v, a, shared)
        else:
            if cache is not None and first_out is not None:
                cache.store(first_out, (v, a))
        return self.video_model.unembed(vt, v), self.audio_model.unembed(at, a)

    def _resident(self, i: int) -> ContextManager:
        return self.video_model.resident(i)  # the towers share one residency: fusion block i is both blocks i

    def _skip_block(
        self, i: int, vt: TowerTokens, at: TowerTokens, v: torch.Tensor, a: torch.Tensor, slg_rows: Sequence[int] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Skip-layer guidance: block ``i`` runs only for the samples not in ``slg_rows``."""
        run = [] if slg_rows is None else [r for r in range(v.shape[0]) if r not in set(slg_rows)]
        if not run:
            return v, a
        v_run, a_run = self.video_model.run_block(
            self._fusion_block, i, vt.select(run), at.select(run), take_rows(v, run), take_rows(a, run)
        )
        # Reassemble in row order from python slices (no index tensor on the device).
        pos = {r: k for k, r in enumerate(run)}
        v = torch.cat([v_run[pos[r] : pos[r] + 1] if r in pos else v[r : r + 1] for r in range(v.shape[0])])
        a = torch.cat([a_run[pos[r] : pos[r] + 1] if r in pos else a[r : r + 1] for r in range(a.shape[0])])
        return v, a

    def _fusion_block(
        self, i: int, vt: TowerTokens, at: TowerTokens, v: torch.Tensor, a: torch.Tensor, shared_input: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fusion block ``i``. ``shared_input``: all rows enter it identical (same latents and timesteps, different
        text): self-attention, the cross-attention queries and the cross-modal attention read no text, so they run
        on row 0 only and the text attention, output projection and FFN broadcast that row over the batch. Exact:
        the same operations on the same numbers (about a third of the block's per-row work is saved)."""
        vb, ab = self.video_model.blocks[i], self.audio_model.blocks[i]
        backend = self.video_model.attention_backend
        vkv = None if vt.text_kv is None else vt.text_kv[i]
        akv = None if at.text_kv is None else at.text_kv[i]
        vs, as_ = vt, at  # what the text-free parts read
        if shared_input:
            vs, as_, v, a = vt.select([0]), at.select([0]), v[:1], a[:1]
            # Rows' rotations are identical too: row 0's keeps the broadcast one-row queries one row.
            vt, at = replace(vt, rope=vs.rope), replace(at, rope=as_.rope)
        a = ab.self_attention(as_, a, backend)
        v = vb.self_attention(vs, v, backend)
        a_before_cross = a
        a = ab.cross_attention_ffn(at, a, CrossModalTarget(v, vs.seq_lens, vs.rope), backend, akv)
        v = vb.cross_attention_ffn(vt, v, CrossModalTarget(a_before_cross, as_.seq_lens, as_.rope), backend, vkv)
        return v, a


class BlockResidency:
    """Protocol of ``Tower.block_residency`` (shared by both towers): ``block(i)`` is a context manager around block i."""

    def block(self, i: int) -> ContextManager:  # pragma: no cover - interface
        raise NotImplementedError


def init_tower_weights(tower: Tower) -> None:
    """Xavier linears with zero bias, N(0, 0.02) text/time embeddings, zero head, default audio convs."""
    for m in tower.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    if isinstance(tower.patch_embedding, nn.Conv3d):
        nn.init.xavier_uniform_(tower.patch_embedding.weight.flatten(1))
    for seq in (tower.text_embedding, tower.time_embedding):
        for m in seq:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
    nn.init.zeros_(tower.head.head.weight)
