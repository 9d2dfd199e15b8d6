"""Face count with S3FD (the detector syncnet-python ships, same weights as the sync stage), and the
category used to balance single-person, multi-person and person-free clips."""
from __future__ import annotations

import hashlib

import numpy as np

FACE_CATEGORIES = ("none", "single", "multi")


def face_category(count: int) -> str:
    return "none" if count == 0 else "single" if count == 1 else "multi"


def keep_for_balance(clip_id: str, fraction: float) -> bool:
    """Deterministic Bernoulli(fraction) by id hash: the same clip gets the same answer on every run/engine."""
    if fraction >= 1.0:
        return True
    h = int.from_bytes(hashlib.sha1(clip_id.encode()).digest()[:8], "big") / 2**64
    return h < fraction


class S3FDCounter:
    def __init__(self, weights: str, device: str = "cpu", scale: float = 0.5, confidence: float = 0.9) -> None:
        import torch
        from syncnet_python.detectors.s3fd import S3FD
        from syncnet_python.detectors.s3fd.nets import S3FDNet

        net = S3FDNet(device=device)
        net.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
        self.detector = S3FD(net=net.eval(), device=device)
        self.scale = scale
        self.confidence = confidence

    def __call__(self, frames: np.ndarray) -> int:
        """Median number of faces over ``frames`` (uint8 RGB [N, H, W, 3]): robust to a missed detection."""
        counts = [len(self.detector.detect_faces(f, conf_th=self.confidence, scales=[self.scale])) for f in frames]
        return int(np.median(counts)) if counts else 0
