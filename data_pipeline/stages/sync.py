"""Sync: SyncNet (syncnet-python: S3FD face tracks, then SyncNet on each track) scores audio-video offset.

Rule of the paper: keep a clip when its best face track (highest confidence) has |offset| <= max_abs_offset
and confidence > min_confidence. Offsets are in SyncNet frames: the package re-encodes to 25 fps, so an
offset of 1 is 40 ms, not 1/24 s. Clips without any face track are rejected (``no_face_track``) or, with
``sync.on_no_face_track=keep`` (non-speech data), kept with ``scores.sync_status = "no_face_track"``.
Reasons: ``out_of_sync``, ``low_sync_confidence``, ``no_face_track``.
The stage is on by default; without its weights the run refuses to start unless ``sync.enabled=false``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Iterator, Optional, Sequence

import ffmpeg

from data_pipeline.config import SYNCNET_FPS, SyncConfig, resolve_device
from data_pipeline.manifest import Record, ok, reject
from data_pipeline.stages.base import Stage

log = logging.getLogger(__name__)


def sync_decision(offsets: Sequence[int], confs: Sequence[float], cfg: SyncConfig) -> tuple[Optional[str], dict]:
    """(rejection reason or None, scores) for SyncNet's per-track offsets and confidences."""
    if not offsets:
        # Kept clips say so in their metadata: they were never sync-checked (non-speech data).
        scores = {"sync_tracks": 0, "sync_status": "no_face_track"}
        return ("no_face_track" if cfg.on_no_face_track == "reject" else None), scores
    best = max(range(len(confs)), key=lambda i: confs[i])
    offset, conf = int(offsets[best]), float(confs[best])
    scores = {"sync_tracks": len(offsets), "sync_offset": offset, "sync_offset_s": round(offset / SYNCNET_FPS, 4),
              "sync_confidence": round(conf, 4), "sync_status": "checked"}
    if abs(offset) > cfg.max_abs_offset:
        return "out_of_sync", scores
    if not conf > cfg.min_confidence:
        return "low_sync_confidence", scores
    return None, scores


@contextlib.contextmanager
def captured_stderr() -> Iterator[tempfile.TemporaryFile]:
    """Send fd 2 to a temp file: syncnet-python runs ffmpeg through ffmpeg-python without -loglevel, which
    would print a full ffmpeg log per clip into the worker's stderr."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield sink
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class SyncStage(Stage):
    name = "sync"

    @property
    def enabled(self) -> bool:
        return self.cfg.sync.enabled

    @property
    def loads_models(self) -> bool:
        return self.enabled

    def setup(self) -> None:
        self.pipeline = None
        if not self.enabled:
            return
        from syncnet_python import SyncNetPipeline

        cfg = self.cfg.sync
        knobs = {"s3fd_weights": cfg.s3fd_weights, "syncnet_weights": cfg.syncnet_weights,
                 "min_face_size": cfg.min_face_size, "min_track": cfg.min_track, "facedet_scale": cfg.facedet_scale,
                 "frame_rate": SYNCNET_FPS}
        self.pipeline = SyncNetPipeline(knobs, device=resolve_device(cfg.device))

    def process(self, record: Record) -> list[Record]:
        if self.pipeline is None:
            return [ok(record)]
        failure = None
        with self.local(record["video"]) as video, self.local(record["audio"]) as audio, \
                tempfile.TemporaryDirectory(prefix="syncnet-") as work, captured_stderr() as err:
            try:
                offsets, confs, *_ = self.pipeline.inference(str(video), str(audio), cache_dir=work)
            except (RuntimeError, ffmpeg.Error) as e:  # how the package reports ffmpeg failing on this clip
                err.seek(0)
                failure = (e, err.read()[-2000:].decode("utf-8", "replace"))
        if failure is not None:  # logged here, once stderr is back
            log.error("syncnet failed on %s; its ffmpeg output ends with:\n%s", record["id"], failure[1])
            return [reject(record, "sync_media_error", str(failure[0]))]
        reason, sync_scores = sync_decision(offsets, confs, self.cfg.sync)
        scores = {**(record.get("scores") or {}), **sync_scores}
        if reason is not None:
            return [reject(record, reason, "", scores=scores)]
        return [ok(record, scores=scores)]
