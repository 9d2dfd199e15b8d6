"""The configured stages as one chain that a record flows through, each stage's result recorded per input.

``Chain.step(stage, record)`` is the unit both engines run: look the input up in the stage's results (a
resumed run skips it), otherwise run the stage, record its outputs durably, and delete the intermediates of
outputs that were rejected. ``Chain.run_source`` pushes one record depth-first through every later stage
(the local engine); the Ray engine calls ``step`` from one Ray Data operator per stage. Each step returns the
accepted outputs and a ``StepEvent`` the driver aggregates (counts, and the error ceiling).
"""
from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional

from data_pipeline.config import DataPipelineConfig
from data_pipeline.manifest import ERROR_PREFIX, OK, Manifest, Record
from data_pipeline.stages import Stage, build_stage
from data_pipeline.storage import Storage


@dataclass
class StepEvent:
    stage: str
    new: bool  # processed now (False: found in the results of an earlier run)
    accepted: int
    rejected: int
    errors: int  # rejections with an error:<type> reason

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunCounts:
    """What the driver learns from the events: per-stage counts for this run."""

    processed: dict[str, int] = field(default_factory=dict)
    resumed: dict[str, int] = field(default_factory=dict)
    errors: int = 0

    def add(self, event: StepEvent | dict) -> None:
        e = event if isinstance(event, StepEvent) else StepEvent(**event)
        bucket = self.processed if e.new else self.resumed
        bucket[e.stage] = bucket.get(e.stage, 0) + 1
        self.errors += e.errors if e.new else 0

    def check(self, max_errors: int) -> None:
        if 0 <= max_errors < self.errors:
            raise RuntimeError(f"{self.errors} inputs failed with unexpected errors (engine.max_errors="
                               f"{max_errors}); see the error:<type> rejections in the logs and manifests, fix the "
                               "cause or raise engine.max_errors, then re-run: finished inputs are skipped")


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the ffmpeg runs): a step's core-seconds, which
    unlike wall time do not grow when other work shares the machine (one step runs at a time per worker)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Chain:
    """The stages ``names`` (in pipeline order), built and set up lazily in the process that runs them."""

    def __init__(self, cfg: DataPipelineConfig, names: Iterable[str]) -> None:
        self.cfg = cfg
        self.names = tuple(names)
        self.storage = Storage(cfg.output)
        self._stages: dict[str, Stage] = {}
        self._manifests = {n: Manifest(self.storage, n) for n in self.names}

    def stage(self, name: str) -> Stage:
        if name not in self._stages:
            stage = build_stage(name, self.cfg)
            stage.setup()
            self._stages[name] = stage
        return self._stages[name]

    def step(self, name: str, record: Record) -> tuple[list[Record], StepEvent]:
        manifest = self._manifests[name]
        outputs = manifest.get(record["id"])
        new = outputs is None
        if outputs is None:
            stage = self.stage(name)
            start, cpu = time.perf_counter(), cpu_seconds()
            outputs = stage.run(record)
            manifest.append(record["id"], outputs, time.perf_counter() - start, cpu_seconds() - cpu)
            for out in outputs:
                if out["status"] != OK:
                    stage.discard(out)
        accepted = [o for o in outputs if o["status"] == OK]
        errors = sum(1 for o in outputs if o["status"] != OK and str(o["reason"]).startswith(ERROR_PREFIX))
        return accepted, StepEvent(name, new, len(accepted), len(outputs) - len(accepted), errors)

    def run_source(self, record: Record, start: Optional[str] = None) -> list[dict]:
        """Run ``record`` through the chain from stage ``start`` (default: the first) to the end."""
        names = self.names[self.names.index(start):] if start else self.names
        events: list[dict] = []
        todo = [(0, record)]
        while todo:  # depth-first: a clip goes all the way through before the next clip of its source
            i, rec = todo.pop()
            accepted, event = self.step(names[i], rec)
            events.append(event.to_dict())
            if i + 1 < len(names):
                todo.extend((i + 1, r) for r in reversed(accepted))
        return events
