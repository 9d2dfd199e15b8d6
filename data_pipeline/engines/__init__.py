"""Engines run the stage chain over the pending inputs. ``local``: a process pool on this machine; ``ray``:
one streaming Ray Data pipeline on a (local or remote) cluster. Both run the same ``Chain.step`` per stage
and input, and the workers record results themselves, so results, shards and resume behave alike."""
from __future__ import annotations

from types import ModuleType


def get_engine(name: str) -> ModuleType:
    """The engine module: ``run_chain(cfg, names, records) -> RunCounts`` and ``parallel_map(cfg, fn, items)``."""
    if name == "local":
        from data_pipeline.engines import local as engine
    elif name == "ray":
        from data_pipeline.engines import ray_engine as engine
    else:
        raise ValueError(f"unknown engine {name!r}; use 'local' or 'ray'")
    return engine
