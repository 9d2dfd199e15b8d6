"""Filter: drop clips that would teach the model the wrong thing, cheapest checks first.

(The resolution floor, ``filter.min_width`` x ``min_height``, is applied by probe, before any clip is cut.)
Checks and their rejection reasons, in order:
``silent`` (mean volume below min_mean_volume_db),
``static`` (motion score below motion.min_score), ``low_aesthetic`` (when the CLIP + LAION weights are given),
``balance_{none,single,multi}`` (face-category subsampling, when S3FD weights are given).
Every computed score is kept in the record's ``scores`` (rejected clips too, to tune thresholds).
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from data_pipeline.config import resolve_device
from data_pipeline.filters.faces import face_category, keep_for_balance
from data_pipeline.filters.motion import build_flow, motion_score, pair_indices
from data_pipeline.manifest import Record, ok, reject
from data_pipeline.media import decode_frames, mean_volume_db, read_wav
from data_pipeline.stages.base import Stage

log = logging.getLogger(__name__)


def evenly_spaced(num_frames: int, count: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, num_frames - 1, count).round()})


class FilterStage(Stage):
    name = "filter"

    @property
    def loads_models(self) -> bool:
        cfg = self.cfg.filter
        return self.cfg.mode == "video" and (bool(cfg.motion.enabled and cfg.motion.raft_weights)
                                             or cfg.aesthetic.enabled or cfg.face.enabled)

    def setup(self) -> None:
        cfg = self.cfg.filter
        self.flow = None
        self.aesthetic = None
        self.faces = None
        if self.cfg.mode != "video":
            return  # audio-only clips get the volume check alone
        if cfg.motion.enabled:
            self.flow = build_flow(cfg.motion.raft_weights, cfg.motion.raft_variant,
                                   resolve_device(cfg.motion.device))
        # Enabled filters have their weights: the runner refuses to start otherwise (data_pipeline.weights).
        if cfg.aesthetic.enabled:
            from data_pipeline.filters.aesthetic import AestheticScorer

            self.aesthetic = AestheticScorer(cfg.aesthetic.clip_model, cfg.aesthetic.predictor_weights,
                                             resolve_device(cfg.aesthetic.device))
        if cfg.face.enabled:
            from data_pipeline.filters.faces import S3FDCounter

            self.faces = S3FDCounter(cfg.face.s3fd_weights, resolve_device(cfg.face.device), cfg.face.detect_scale,
                                     cfg.face.confidence)

    def process(self, record: Record) -> list[Record]:
        cfg = self.cfg.filter
        scores: dict[str, Optional[float]] = dict(record.get("scores") or {})

        def rejected(reason: str, detail: str) -> list[Record]:
            return [reject(record, reason, detail, scores=scores)]

        with self.local(record["audio"]) as wav:
            audio, _ = read_wav(wav)
        volume = mean_volume_db(audio)
        scores["mean_volume_db"] = round(volume, 3) if np.isfinite(volume) else None
        if cfg.min_mean_volume_db is not None and not volume >= cfg.min_mean_volume_db:
            return rejected("silent", f"mean volume {volume:.1f} dB < {cfg.min_mean_volume_db} dB")
        if self.cfg.mode != "video":
            return [ok(record, scores=scores)]

        with self.local(record["video"]) as video:
            return self._video_checks(record, video, scores)

    def _video_checks(self, record: Record, video, scores: dict) -> list[Record]:
        cfg = self.cfg.filter

        def rejected(reason: str, detail: str) -> list[Record]:
            return [reject(record, reason, detail, scores=scores)]

        fields: dict = {}
        if self.flow is not None:
            pairs = pair_indices(record["num_frames"], cfg.motion.num_pairs, cfg.motion.pair_gap_frames)
            wanted = sorted({i for p in pairs for i in p})
            frames = dict(zip(wanted, decode_frames(video, width=cfg.motion.analysis_width, select=wanted)))
            scores["motion"] = round(motion_score(frames, pairs, self.flow, cfg.motion.regions), 6)
            if scores["motion"] < cfg.motion.min_score:
                return rejected("static", f"motion {scores['motion']:.4f} < {cfg.motion.min_score}")
        if self.aesthetic is not None:
            frames = decode_frames(video, select=evenly_spaced(record["num_frames"], cfg.aesthetic.num_frames))
            scores["aesthetic"] = round(self.aesthetic(frames), 6)
            if scores["aesthetic"] < cfg.aesthetic.min_score:
                return rejected("low_aesthetic", f"aesthetic {scores['aesthetic']:.3f} < {cfg.aesthetic.min_score}")
        if self.faces is not None:
            frames = decode_frames(video, select=evenly_spaced(record["num_frames"], cfg.face.num_frames))
            count = self.faces(frames)
            category = face_category(count)
            fields = {"face_count": count, "face_category": category}
            if not keep_for_balance(record["id"], getattr(cfg.face, f"keep_fraction_{category}")):
                return [reject(record, f"balance_{category}", "subsampled for balance", scores=scores, **fields)]
        return [ok(record, scores=scores, **fields)]
