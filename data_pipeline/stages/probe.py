"""Probe: read container metadata and turn away files the later stages cannot use, each with a reason.

Reasons: ``empty_file`` (zero bytes), ``unreadable`` (ffprobe fails: truncated index, not media, ...),
``no_video_stream`` (video mode), ``no_audio_stream`` (when configured to reject, and always in audio mode),
``zero_duration``, ``decode_error`` (with ``probe.verify_decode``: the data ends early or is corrupt).
"""
from __future__ import annotations

from dataclasses import asdict

from data_pipeline.manifest import Record, ok, reject
from data_pipeline.media import MediaError, probe, verify_decodes
from data_pipeline.stages.base import Stage


class ProbeStage(Stage):
    name = "probe"

    def process(self, record: Record) -> list[Record]:
        cfg = self.cfg.probe
        path = self.source_path(record)
        if not path.exists():
            raise FileNotFoundError(f"{path} was listed as an input but is gone; re-run after restoring it")
        if path.stat().st_size == 0:
            return [reject(record, "empty_file", "zero bytes")]
        try:
            info = probe(path)
        except MediaError as e:
            return [reject(record, "unreadable", str(e))]
        fields = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(info).items()}
        if self.cfg.mode == "video" and not info.has_video:
            return [reject(record, "no_video_stream", "", **fields)]
        if not info.has_audio and (self.cfg.mode == "audio" or cfg.on_missing_audio == "reject"):
            return [reject(record, "no_audio_stream", "", **fields)]
        if info.duration_s <= 0:
            return [reject(record, "zero_duration", "", **fields)]
        if cfg.verify_decode:
            try:
                verify_decodes(path)
            except MediaError as e:
                return [reject(record, "decode_error", str(e), **fields)]
        return [ok(record, **fields)]
