"""DeSync (MMAudio's av-benchmark): the audio-video offset Synchformer predicts, in seconds, averaged in
absolute value over a clip's first and last 4.8 s.

Per clip: the offset class (-2.0 .. +2.0 s) and its softmax probability ("confidence") in each window, and
``desync`` = mean |offset| of the two windows. Aggregate: the mean over clips long enough for one window
(4.8 s of audio and video); shorter clips get NaN and are counted apart.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ovi.eval.clips import EvalClip
from ovi.eval.synchformer.model import Synchformer, load_synchformer
from ovi.eval.synchformer.preprocess import audio_segments, video_segments, windows
from ovi.geometry import SAMPLE_RATE

NAN = float("nan")
SIDES = ("first", "last")  # the clip's first and last window


class DesyncMetric:
    name = "desync"

    def __init__(self, model: Synchformer, device: str = "cpu", segments_per_batch: int = 14) -> None:
        self.model, self.device = model.to(device).eval(), device
        self.cfg = model.cfg
        self.segments_per_batch = segments_per_batch  # bounds activation memory (a segment is 1569 video tokens)
        self.offsets = self.cfg.window.offsets_s()  # seconds per class

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> DesyncMetric:
        return cls(load_synchformer(path), device)

    def _features(self, encode, segments: torch.Tensor) -> torch.Tensor:
        chunks = [encode(c[None].to(self.device))[0] for c in segments.split(self.segments_per_batch)]
        return torch.cat(chunks)  # [S, tokens, D]

    @torch.no_grad()
    def predict(self, frames: np.ndarray, fps: float, audio: np.ndarray) -> list[tuple[float, float]]:
        """(offset seconds, confidence) for each window of a clip; [] when it is shorter than one window.

        ``frames``: uint8 [T, H, W, 3] at ``fps``; ``audio``: mono float32 at the window's sample rate. Segment
        features do not depend on their neighbours, so only the segments of the two windows are encoded.
        """
        cfg = self.cfg
        vid = video_segments(frames, fps, cfg.image_size, cfg.window)
        mel = audio_segments(audio, cfg.spec_frames, cfg.n_mels, cfg.window)
        spans = windows(min(len(vid), len(mel)), cfg.window)
        if not spans:
            return []
        used = sorted({i for span in spans for i in span})
        vfeat = self._features(self.model.video_features, vid[used])
        afeat = self._features(self.model.audio_features, mel[used])
        at = {seg: row for row, seg in enumerate(used)}
        rows = [[at[i] for i in span] for span in spans]
        logits = self.model.offset_logits(torch.stack([vfeat[r] for r in rows]), torch.stack([afeat[r] for r in rows]))
        conf, cls = logits.float().softmax(-1).max(-1)
        return [(self.offsets[int(c)], float(p)) for c, p in zip(cls.cpu(), conf.cpu())]

    def clip(self, clip: EvalClip) -> dict:
        frames, fps = clip.video
        audio = clip.audio
        if SAMPLE_RATE != self.cfg.window.sample_rate:
            from ovi.media import read_audio

            audio = read_audio(clip.path, self.cfg.window.sample_rate)
        preds = self.predict(frames, fps, audio)
        if not preds:
            return {"desync": NAN, **{f"desync_{k}_{s}": NAN for s in SIDES for k in ("offset_s", "conf")}}
        row = {"desync": float(np.mean([abs(off) for off, _ in preds]))}
        for side, (off, conf) in zip(SIDES, preds):
            row[f"desync_offset_s_{side}"], row[f"desync_conf_{side}"] = off, conf
        return row

    def score(self, clips: list[EvalClip]) -> tuple[list[dict], dict]:
        rows = [self.clip(c) for c in clips]
        scored = [r for r in rows if not math.isnan(r["desync"])]
        agg = {"desync_clips": len(scored), "desync_clips_too_short": len(rows) - len(scored)}
        agg["desync"] = float(np.mean([r["desync"] for r in scored])) if scored else NAN
        confs = [r[f"desync_conf_{s}"] for r in scored for s in SIDES]
        agg["desync_conf"] = float(np.mean(confs)) if confs else NAN
        return rows, agg
