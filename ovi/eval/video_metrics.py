"""Video metrics: CLIP text-frame score, identity to the input image (i2v), FVD with cd-fvd's I3D.

CLIP comes from transformers (``CLIPModel`` + ``CLIPProcessor`` folder); FVD's backbone is cd-fvd's
``InceptionI3d`` with its released 400-class weights, its logits as features (as cd-fvd does) and the
Fréchet distance from :mod:`ovi.eval.stats`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ovi.eval.clips import EvalClip
from ovi.eval.hf import DualEncoderMetric
from ovi.eval.stats import frechet_distance_features

NAN = float("nan")
FRAMES_SCORED = 8  # frames per clip for the CLIP scores, evenly spaced
FVD_FRAMES = 16  # the I3D clip length FVD is defined on
FVD_SIZE = 224


def spaced(n: int, k: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))


class ClipMetrics(DualEncoderMetric):
    """``clip_text``: mean cosine between the prompt and the frames; ``identity``: mean cosine between the
    conditioning image and the frames (clips with an image only)."""

    name = "clip"
    model_class, processor_class = "CLIPModel", "CLIPProcessor"

    @torch.no_grad()
    def image_features(self, images: list[np.ndarray]) -> torch.Tensor:
        pixels = self.processor.image_processor(images=images, return_tensors="pt").pixel_values
        return F.normalize(self._vector(self.model.get_image_features(pixel_values=pixels.to(self.device))), dim=-1)

    @torch.no_grad()
    def text_features(self, text: str) -> torch.Tensor:
        tok = self.processor.tokenizer([text], return_tensors="pt", padding=True, truncation=True)
        return F.normalize(self._vector(self.model.get_text_features(**{k: v.to(self.device) for k, v in tok.items()})),
                           dim=-1)

    def score(self, clips: list[EvalClip]) -> tuple[list[dict], dict]:
        from ovi.imaging import open_image

        rows = []
        for c in clips:
            frames = c.video[0]
            f = self.image_features(list(frames[spaced(len(frames), FRAMES_SCORED)]))  # [k, D]
            row = {"clip_text": float((f @ self.text_features(c.prompt).T).mean())}
            if c.image is not None:
                img = self.image_features([np.asarray(open_image(c.image).convert("RGB"))])
                row["identity"] = float((f @ img.T).mean())
            rows.append(row)
        agg = {k: float(np.nanmean([r.get(k, NAN) for r in rows])) for k in ("clip_text", "identity")
               if any(k in r for r in rows)}
        return rows, agg


def i3d(state_dict: dict | None = None) -> torch.nn.Module:
    """cd-fvd's InceptionI3d (400 Kinetics classes); random weights unless a state dict is given."""
    try:
        from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d
    except ImportError as e:
        raise ImportError("FVD needs cd-fvd: pip install --no-deps cd-fvd (see setup.py's eval extra)") from e
    model = InceptionI3d(400, in_channels=3)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model.eval()


def i3d_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [1, 3, 16, 224, 224] in [-1, 1] (16 frames evenly spaced)."""
    x = torch.from_numpy(frames[spaced(len(frames), FVD_FRAMES)]).float().permute(0, 3, 1, 2)  # [t, 3, H, W]
    if x.shape[0] < FVD_FRAMES:  # short clips repeat their last frame
        x = torch.cat([x, x[-1:].expand(FVD_FRAMES - x.shape[0], -1, -1, -1)])
    x = F.interpolate(x, size=(FVD_SIZE, FVD_SIZE), mode="bilinear", align_corners=False)
    return (x / 127.5 - 1.0).permute(1, 0, 2, 3)[None]


class FvdMetric:
    """FVD between the generated clips and their references (needs at least two referenced clips)."""

    name = "fvd"

    def __init__(self, model: torch.nn.Module, device: str = "cpu") -> None:
        self.model, self.device = model.to(device).eval(), device

    @torch.no_grad()
    def features(self, frames: np.ndarray) -> np.ndarray:
        return self.model(i3d_input(frames).to(self.device)).float().reshape(-1).cpu().numpy()

    def score(self, clips: list[EvalClip]) -> tuple[list[dict], dict]:
        from ovi.media import read_video

        paired = [c for c in clips if c.reference is not None]
        if len(paired) < 2:
            raise ValueError("FVD needs reference clips for at least two generated clips: pass --references DIR "
                             "holding mp4s with the generated clips' names")
        gen = np.stack([self.features(c.video[0]) for c in paired])
        ref = np.stack([self.features(read_video(c.reference)[0]) for c in paired])
        return [{} for _ in clips], {"fvd": frechet_distance_features(gen, ref)}
