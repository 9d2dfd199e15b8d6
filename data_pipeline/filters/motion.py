"""Motion score: optical-flow magnitude between evenly spaced frame pairs, in percent of the frame diagonal
per frame of gap, so the number means the same at every resolution and sampling gap.

What counts is the most moving region, not the frame mean: the frame is cut into ``regions`` x ``regions``
cells, each pair scores its busiest cell's mean flow, and the clip scores the mean over pairs. A fixed-camera
talking head moves only around the mouth and eyes; its frame mean (about 0.01-0.07) is below the 0.1 floor,
while its busiest cell is not. Calibration with the default 8x8 cells and Farneback at 256 px wide
(``synth.make_talking_head`` and ``ovi-toy make`` face scenes, tests/test_data_probe_filter.py): talking
head 0.19, toy faces 0.13-0.19, toy ambient views 0.01-0.05, a still shot with sensor noise 0.006, moving
test patterns 1.5-2.6; ``regions=1`` gives the frame mean (talking head 0.014).

Two flow estimators with one signature, ``flow(prev, next) -> [N, H, W, 2]`` on uint8 RGB [N, H, W, 3]:
RAFT (torchvision) when its weights are given, OpenCV Farneback (no weights) otherwise.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

# Farneback parameters: 3-level pyramid at scale 0.5 with a 15 px window, OpenCV's documented example values.
FARNEBACK_ARGS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
RAFT_MULTIPLE = 8  # RAFT works on 1/8 resolution feature maps
RAFT_FLOW_UPDATES = 12


class FlowEstimator(Protocol):
    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray: ...


def pair_indices(num_frames: int, num_pairs: int, gap: int) -> list[tuple[int, int]]:
    """``num_pairs`` (i, i + gap) pairs spread evenly over the clip."""
    last_start = num_frames - 1 - gap
    if last_start < 0:
        raise ValueError(f"a clip of {num_frames} frames has no pair {gap} frames apart")
    starts = np.linspace(0, last_start, num_pairs).round().astype(int)
    return [(int(s), int(s) + gap) for s in starts]


def motion_score(frames: dict[int, np.ndarray], pairs: list[tuple[int, int]], flow: FlowEstimator,
                 regions: int = 1) -> float:
    prev = np.stack([frames[a] for a, _ in pairs])
    nxt = np.stack([frames[b] for _, b in pairs])
    vectors = flow(prev, nxt)  # [P, H, W, 2]
    h, w = prev.shape[1:3]
    gaps = np.array([b - a for a, b in pairs], np.float64)
    magnitude = np.linalg.norm(vectors.astype(np.float64), axis=-1)  # [P, H, W]
    rows, cols = np.linspace(0, h, regions + 1).astype(int), np.linspace(0, w, regions + 1).astype(int)
    cells = np.stack([magnitude[:, rows[i]:rows[i + 1], cols[j]:cols[j + 1]].mean(axis=(1, 2))
                      for i in range(regions) for j in range(regions)], axis=1)  # [P, regions^2]
    busiest = cells.max(axis=1) / gaps
    return float(100.0 * busiest.mean() / np.hypot(h, w))


class FarnebackFlow:
    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        out = []
        for a, b in zip(prev, nxt):
            ga, gb = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
            out.append(cv2.calcOpticalFlowFarneback(ga, gb, None, **FARNEBACK_ARGS))
        return np.stack(out)


class RaftFlow:
    """Any module with torchvision RAFT's interface: ``model(img1, img2, num_flow_updates=k)`` -> list of
    [N, 2, H, W] flows, inputs in [-1, 1] with sides divisible by 8."""

    def __init__(self, model: "torch.nn.Module", device: str = "cpu", updates: int = RAFT_FLOW_UPDATES) -> None:
        self.model = model.eval().to(device)
        self.device = device
        self.updates = updates

    @classmethod
    def from_weights(cls, path: str, variant: str, device: str) -> "RaftFlow":
        import torch

        try:
            from torchvision.models import optical_flow
        except (ImportError, RuntimeError) as e:
            raise ImportError(
                "RAFT needs torchvision built for the installed torch (the PyPI wheel is CUDA-linked and does not "
                "load beside torch+cpu); install the matching torchvision or set filter.motion.raft_weights='' "
                "to use OpenCV Farneback") from e
        if variant not in ("raft_large", "raft_small"):
            raise ValueError(f"filter.motion.raft_variant must be raft_large or raft_small, got {variant!r}")
        model = getattr(optical_flow, variant)(weights=None)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return cls(model, device)

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        def to_tensor(x: np.ndarray) -> "torch.Tensor":
            t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
            return t.to(self.device)

        a, b = to_tensor(prev), to_tensor(nxt)
        h, w = a.shape[-2:]
        ph, pw = (-h) % RAFT_MULTIPLE, (-w) % RAFT_MULTIPLE
        if ph or pw:
            a = F.pad(a, (0, pw, 0, ph), mode="replicate")
            b = F.pad(b, (0, pw, 0, ph), mode="replicate")
        with torch.inference_mode():
            flow = self.model(a, b, num_flow_updates=self.updates)[-1]
        return flow[:, :, :h, :w].permute(0, 2, 3, 1).float().cpu().numpy()


def build_flow(raft_weights: str, raft_variant: str, device: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return RaftFlow.from_weights(raft_weights, raft_variant, device) if raft_weights else FarnebackFlow()
