"""Audio-video sync: SyncNet LSE-C / LSE-D (syncnet-python) and the toy world's analytic sync and adherence.
Synchformer's DeSync lives in ``ovi.eval.synchformer``.

SyncNet follows the data pipeline's sync stage (``data_pipeline/stages/sync.py``): S3FD face tracks, then
SyncNet per track at 25 fps; a clip's figures are its most confident track's. Offsets are SyncNet frames
(40 ms). Clips without a face track get NaN and are counted.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from ovi.eval.clips import EvalClip
from ovi.geometry import SAMPLE_RATE

NAN = float("nan")
SYNCNET_FPS = 25  # syncnet-python re-encodes to this rate


class SyncNetMetric:
    name = "syncnet"

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline  # a syncnet_python.SyncNetPipeline

    @classmethod
    def load(cls, s3fd: str | Path, syncnet: str | Path, device: str = "cpu") -> SyncNetMetric:
        from syncnet_python import SyncNetPipeline

        knobs = {"s3fd_weights": str(s3fd), "syncnet_weights": str(syncnet), "frame_rate": SYNCNET_FPS}
        return cls(SyncNetPipeline(knobs, device=device))

    def clip(self, path: Path) -> dict:
        from data_pipeline.stages.sync import captured_stderr  # ffmpeg-python's logs off the terminal

        with tempfile.TemporaryDirectory(prefix="ovi-eval-syncnet-") as work, captured_stderr():
            offsets, confs, dists, *_ = self.pipeline.inference(str(path), None, cache_dir=work)
        if not offsets:
            return {"lse_c": NAN, "lse_d": NAN, "sync_offset": NAN, "face_tracks": 0}
        best = int(np.argmax(confs))
        return {"lse_c": float(confs[best]), "lse_d": float(dists[best]), "sync_offset": int(offsets[best]),
                "face_tracks": len(offsets)}

    def score(self, clips: list[EvalClip]) -> tuple[list[dict], dict]:
        rows = [self.clip(c.path) for c in clips]
        scored = [r for r in rows if r["face_tracks"]]
        agg = {"clips_with_face": len(scored)}
        for k in ("lse_c", "lse_d"):
            agg[k] = float(np.mean([r[k] for r in scored])) if scored else NAN
        agg["abs_sync_offset"] = float(np.mean([abs(r["sync_offset"]) for r in scored])) if scored else NAN
        return rows, agg


class ToyMetric:
    """``ovi.toy.metrics`` on every clip: event sync share and offset, mouth-loudness correlation, and
    adherence (kind, count, colours) against the sidecar's ground truth when there is one."""

    name = "toy"
    FIELDS = ("kind", "share_matched", "median_offset_ms", "median_abs_offset_ms", "mouth_corr")

    def score(self, clips: list[EvalClip]) -> tuple[list[dict], dict]:
        from ovi.toy.metrics import score_clip, summarise

        scores = []
        for c in clips:
            frames, fps = c.video
            scores.append(score_clip(frames, c.audio, fps, SAMPLE_RATE, c.truth))
        rows = []
        for s in scores:
            d = s.as_dict()
            row = {f"toy_{k}": d[k] for k in self.FIELDS}
            row.update({f"toy_{k}": v for k, v in d["truth"].items() if k in ("kind_ok", "count_ok", "colours_ok")})
            rows.append(row)
        summary = summarise(scores)
        return rows, {f"toy_{k}": v for k, v in summary.items() if k != "clips" and not (
            isinstance(v, float) and math.isnan(v))}

