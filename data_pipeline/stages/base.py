"""What every stage is: a named, picklable object that turns one record into output records.

``setup`` loads models once per worker (process, Ray task process or Ray actor); ``process`` handles one
record and returns its outputs (accepted or rejected). File outputs live in the run's ``Storage`` (a local
folder or an object store) under deterministic names and are written atomically, so reprocessing an input
after a kill overwrites rather than duplicates. ``run`` turns every per-input failure into a rejection
(``<stage>_media_error`` when ffmpeg refuses a file, ``error:<ExceptionType>`` for anything else) so that one
bad file never stops a run; only a ``FatalError`` (a broken caption server, ...) propagates.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from data_pipeline.config import DataPipelineConfig, Resources
from data_pipeline.manifest import ERROR_PREFIX, FatalError, Record, reject
from data_pipeline.media import MediaError
from data_pipeline.sources import local_source
from data_pipeline.storage import Storage

log = logging.getLogger(__name__)

# Record fields naming intermediate files in the run's storage; deleted once the clip is rejected or sharded.
INTERMEDIATE_FIELDS = ("video", "audio", "packed_video")
ERROR_DETAIL_CHARS = 500


class Stage:
    name: str = ""

    def __init__(self, cfg: DataPipelineConfig) -> None:
        self.cfg = cfg
        self.storage = Storage(cfg.output)

    @property
    def resources(self) -> Resources:
        return getattr(self.cfg, self.name).resources

    @property
    def enabled(self) -> bool:
        """A disabled stage passes every record through unchanged (switched off in the config)."""
        return True

    @property
    def loads_models(self) -> bool:
        """True when ``setup`` loads networks: the Ray engine then runs the stage as a pool of actors (models
        loaded once per actor) instead of plain tasks."""
        return False

    def setup(self) -> None:
        """Load models; called once in each worker before the first ``process``."""

    def process(self, record: Record) -> list[Record]:
        raise NotImplementedError

    def run(self, record: Record) -> list[Record]:
        """``process`` with every per-input failure turned into a rejection (logged and counted)."""
        try:
            return self.process(record)
        except MediaError as e:
            return [reject(record, f"{self.name}_media_error", str(e))]
        except FatalError:
            raise
        except Exception as e:  # noqa: BLE001 - one input's failure must not stop a run over millions
            log.warning("%s: %s failed on %s: %s", self.name, type(e).__name__, record.get("id"), e)
            return [reject(record, f"{ERROR_PREFIX}{type(e).__name__}", str(e)[:ERROR_DETAIL_CHARS])]

    def discard(self, record: Record) -> None:
        """Delete the intermediate files of a clip that will not reach a shard."""
        if self.cfg.keep_intermediates:
            return
        for key in INTERMEDIATE_FIELDS:
            if record.get(key):
                self.storage.delete(record[key])

    # Helpers shared by the stages.
    @contextmanager
    def source(self, record: Record) -> Iterator[Path]:
        """A local path to the record's raw source (a bucket object is downloaded for the block's length)."""
        with local_source(record["source"], self.cfg.input) as path:
            yield path

    @contextmanager
    def local(self, rel: str) -> Iterator[Path]:
        """A local path to read the run's file ``rel`` from (ffmpeg needs one)."""
        with self.storage.local_copy(rel) as path:
            yield path

    @contextmanager
    def staged(self, rel: str) -> Iterator[Path]:
        """A local temp path to write; it becomes the run's file ``rel`` when the block succeeds."""
        with self.storage.staged(rel) as path:
            yield path
