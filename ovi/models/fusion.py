"""The Ovi fusion model: a video tower and an audio tower that exchange information in every block.

Per fusion block i (the order matters and matches the released model):
  1. audio self-attention            2. video self-attention
  3. audio: text + cross-modal attention reading the video after step 2, then the audio FFN
  4. video: text + cross-modal attention reading the audio from *before* step 3, then the video FFN
Cross-modal queries are rotated with the querying tower's RoPE and keys with the other tower's, so
audio token l (at video frame 0.19676*l) and video frame f meet on one time axis.
"""
from __future__ import annotations

import torch
from torch import nn

from ovi.config import FusionConfig
from ovi.models.tower import CrossModalTarget, Tower, TowerTokens

# Released init scales the video tower's fresh cross-modal projections down so the pretrained video
# tower is barely perturbed at the start of fusion training.
VIDEO_FUSION_INIT_SCALE = 0.1


class FusionModel(nn.Module):
    def __init__(self, cfg: FusionConfig, init: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.video_model = Tower(cfg.video, fusion=True)
        self.audio_model = Tower(cfg.audio, fusion=True)
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
            if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in ("k_fusion", "v_fusion"):
                with torch.no_grad():
                    m.weight.mul_(VIDEO_FUSION_INIT_SCALE)

    def forward(
        self,
        video: list[torch.Tensor] | None,
        audio: list[torch.Tensor] | None,
        t: torch.Tensor,
        video_context: list[torch.Tensor] | None = None,
        audio_context: list[torch.Tensor] | None = None,
        video_seq_len: int | None = None,
        audio_seq_len: int | None = None,
        first_frame_is_clean: bool = False,
        slg_layer: int | None = None,
    ) -> tuple[list[torch.Tensor] | None, list[torch.Tensor] | None]:
        """Velocity predictions for video latents [48, F, H, W] and audio latents [L, 20] (lists).

        ``t`` [B] holds 1000*sigma per sample. ``first_frame_is_clean`` (image-to-video) gives the first
        latent frame's video tokens t = 0. ``slg_layer`` skips that whole fusion block (both towers),
        for skip-layer guidance on the negative branch; None or 0 disables it. With ``audio=None`` or
        ``video=None`` one tower runs alone, without cross-modal attention.
        """
        if video is None and audio is None:
            raise ValueError("pass video latents, audio latents, or both")
        if audio is None:
            return self.video_model(video, t, video_context, video_seq_len, first_frame_is_clean), None
        if video is None:
            return None, self.audio_model(audio, t, audio_context, audio_seq_len)
        if slg_layer and not 0 < slg_layer < len(self.video_model.blocks):
            raise ValueError(f"slg_layer {slg_layer} out of range 1..{len(self.video_model.blocks) - 1}")

        vt = self.video_model.embed(video, t, video_context, video_seq_len, first_frame_is_clean)
        at = self.audio_model.embed(audio, t, audio_context, audio_seq_len)
        v, a = vt.x, at.x
        for i in range(len(self.video_model.blocks)):
            if slg_layer and i == slg_layer:
                continue
            v, a = self.video_model.run_block(self._fusion_block, i, vt, at, v, a)
        return self.video_model.unembed(vt, v), self.audio_model.unembed(at, a)

    def _fusion_block(
        self, i: int, vt: TowerTokens, at: TowerTokens, v: torch.Tensor, a: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        vb, ab = self.video_model.blocks[i], self.audio_model.blocks[i]
        backend = self.video_model.attention_backend
        a = ab.self_attention(at, a, backend)
        v = vb.self_attention(vt, v, backend)
        a_before_cross = a
        a = ab.cross_attention_ffn(at, a, CrossModalTarget(v, vt.seq_lens, vt.rope), backend)
        v = vb.cross_attention_ffn(vt, v, CrossModalTarget(a_before_cross, at.seq_lens, at.rope), backend)
        return v, a


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
