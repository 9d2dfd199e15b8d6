"""Aesthetic score: the LAION aesthetic predictor (an MLP) on L2-normalised CLIP image embeddings.

The CLIP tower is a transformers ``CLIPVisionModelWithProjection`` folder (ViT-L/14 for the released head);
the head's state dict keeps LAION's layout (``layers.{0,2,4,6,7}``: Linear layers with dropouts between), and
its widths are read from the file, so any compatible head loads.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def laion_head(state_dict: dict) -> "torch.nn.Sequential":
    """LAION's MLP: Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear (dropouts are identity
    at inference; they keep the state-dict indices of the released file)."""
    from torch import nn

    linear_idx = sorted({int(k.split(".")[1]) for k in state_dict if k.startswith("layers.")})
    if linear_idx != [0, 2, 4, 6, 7]:
        raise ValueError(f"aesthetic predictor weights have linear layers {linear_idx}, expected LAION's "
                         "[0, 2, 4, 6, 7] (improved-aesthetic-predictor MLP)")
    dims = [state_dict["layers.0.weight"].shape[1]] + [state_dict[f"layers.{i}.weight"].shape[0] for i in linear_idx]
    layers: list[nn.Module] = []
    for j in range(len(linear_idx)):
        layers.append(nn.Linear(dims[j], dims[j + 1]))
        if j < 3:
            layers.append(nn.Dropout(0.0))
    head = nn.Sequential(*layers)
    head.load_state_dict({k.removeprefix("layers."): v for k, v in state_dict.items()})
    return head


class AestheticScorer:
    def __init__(self, clip_model: str, predictor_weights: str, device: str = "cpu") -> None:
        import torch
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        self.device = device
        self.processor = CLIPImageProcessor.from_pretrained(clip_model)
        self.clip = CLIPVisionModelWithProjection.from_pretrained(clip_model).eval().to(device)
        state = torch.load(predictor_weights, map_location="cpu", weights_only=True)
        self.head = laion_head(state).eval().to(device)
        embed_dim = self.clip.config.projection_dim
        if self.head[0].in_features != embed_dim:
            raise ValueError(f"aesthetic head expects {self.head[0].in_features}-d embeddings but {clip_model} "
                             f"projects to {embed_dim}; use the CLIP model the head was trained on")

    def __call__(self, frames: np.ndarray) -> float:
        """Mean predicted score over ``frames`` (uint8 RGB [N, H, W, 3])."""
        import torch

        inputs = self.processor(images=list(frames), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            emb = self.clip(**inputs).image_embeds.float()
            emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            scores = self.head(emb).squeeze(-1)
        return float(scores.mean())
