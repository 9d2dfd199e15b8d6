"""What every stage is: a named, picklable object that turns one record into output records.

``setup`` loads models once per worker (process or Ray actor); ``process`` handles one record and returns its
outputs (accepted or rejected); ``finalize`` runs once in the driver after all records are processed (the pack
stage writes its shards there). File outputs live under the run's output folder and are written atomically
with deterministic names, so reprocessing an input after a kill overwrites rather than duplicates.
"""
from __future__ import annotations

import logging
from pathlib import Path

from data_pipeline.config import DataPipelineConfig, Resources
from data_pipeline.manifest import Record, reject
from data_pipeline.media import MediaError
from data_pipeline.sources import resolve

log = logging.getLogger(__name__)


class Stage:
    name: str = ""

    def __init__(self, cfg: DataPipelineConfig) -> None:
        self.cfg = cfg
        self.output = Path(cfg.output)

    @property
    def resources(self) -> Resources:
        return getattr(self.cfg, self.name).resources

    @property
    def enabled(self) -> bool:
        """A disabled stage passes every record through unchanged (its weights were not given)."""
        return True

    def setup(self) -> None:
        """Load models; called once in each worker before the first ``process``."""

    def process(self, record: Record) -> list[Record]:
        raise NotImplementedError

    def run(self, record: Record) -> list[Record]:
        """``process`` with one expected failure turned into a rejection: ffmpeg refusing a file is a property
        of the data. Any other exception is a bug and propagates."""
        try:
            return self.process(record)
        except MediaError as e:
            return [reject(record, f"{self.name}_media_error", str(e))]

    def finalize(self, accepted: list[Record]) -> dict:
        """Driver-side step after every record is processed; returns extra summary fields."""
        return {}

    # Helpers shared by the stages.
    def source_path(self, record: Record) -> Path:
        return resolve(record["source"], self.cfg.input, self.output / "cache" / "sources")

    def out_path(self, relative: str) -> Path:
        return self.output / relative
