"""Probe: read container metadata and turn away files the later stages cannot use, each with a reason.

Reasons: ``empty_file`` (zero bytes), ``unreadable`` (ffprobe fails: truncated index, not media, ...),
``no_video_stream`` (video mode), ``no_audio_stream`` (when configured to reject, and always in audio mode),
``low_resolution`` (video mode: below filter.min_width x min_height, checked before any clip is cut),
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
        with self.source(record) as path:
            return self._probe(record, path)

    def _probe(self, record: Record, path) -> list[Record]:
        cfg = self.cfg.probe
        if path.stat().st_size == 0:  # a file deleted since listing raises here: counted as error:<type>
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
        fcfg = self.cfg.filter
        if self.cfg.mode == "video" and (info.width < fcfg.min_width or info.height < fcfg.min_height):
            # Checked here, before split spends a decode and an encode per clip on it.
            return [reject(record, "low_resolution", f"{info.width}x{info.height} < "
                                                     f"{fcfg.min_width}x{fcfg.min_height}", **fields)]
        if info.duration_s <= 0:
            return [reject(record, "zero_duration", "", **fields)]
        if cfg.verify_decode:
            try:
                verify_decodes(path)
            except MediaError as e:
                return [reject(record, "decode_error", str(e), **fields)]
        return [ok(record, **fields)]
