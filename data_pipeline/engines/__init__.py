"""Engines run one stage over its pending records and append each result to the stage manifest as it
arrives. ``local``: a process pool on this machine; ``ray``: a Ray Data map over a (local or remote) cluster.
Both call the same ``Stage.run`` and feed results in completion order; the manifest makes order irrelevant."""
from __future__ import annotations

from typing import Callable

from data_pipeline.config import DataPipelineConfig
from data_pipeline.manifest import Manifest, Record

EngineFn = Callable[[str, DataPipelineConfig, list[Record], Manifest], None]


def get_engine(name: str) -> EngineFn:
    if name == "local":
        from data_pipeline.engines.local import run_stage
    elif name == "ray":
        from data_pipeline.engines.ray_engine import run_stage
    else:
        raise ValueError(f"unknown engine {name!r}; use 'local' or 'ray'")
    return run_stage
