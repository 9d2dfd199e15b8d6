"""Local engine: every source goes through the whole chain in one worker of a process pool (stages and their
models built once per worker), a bounded number of sources in flight, a progress bar; results are recorded
by the workers themselves (``Chain.step``), the driver only counts events. With one worker the chain runs in
the driver process itself (simplest to debug; also what an in-memory fsspec output needs)."""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Callable, Iterable, Optional, Sequence, TypeVar

from tqdm import tqdm

from data_pipeline.config import DataPipelineConfig
from data_pipeline.engines.chain import Chain, RunCounts
from data_pipeline.manifest import Record

IN_FLIGHT_PER_WORKER = 2  # enough to keep workers busy, few enough that a kill loses little work
T = TypeVar("T")
R = TypeVar("R")

_chain: Optional[Chain] = None


def _init_worker(cfg: DataPipelineConfig, names: Sequence[str]) -> None:
    global _chain
    _chain = Chain(cfg, names)


def _run_source(record: Record) -> list[dict]:
    assert _chain is not None, "worker used before its initializer ran"
    return _chain.run_source(record)


def num_workers(cfg: DataPipelineConfig) -> int:
    return cfg.engine.workers or os.cpu_count() or 1


def run_chain(cfg: DataPipelineConfig, names: Sequence[str], records: list[Record]) -> RunCounts:
    counts = RunCounts()
    bar = tqdm(total=len(records), desc="sources", unit="src", dynamic_ncols=True, disable=not records)

    def consume(events: list[dict]) -> None:
        for e in events:
            counts.add(e)
        bar.update()
        counts.check(cfg.engine.max_errors)

    try:
        workers = min(num_workers(cfg), len(records))
        if workers <= 1:
            chain = Chain(cfg, names)
            for record in records:
                consume(chain.run_source(record))
        else:
            for events in pool_map(_run_source, records, workers, _init_worker, (cfg, names)):
                consume(events)
    finally:
        bar.close()
    return counts


def pool_map(fn: Callable[[T], R], items: Iterable[T], workers: int, initializer: Optional[Callable] = None,
             initargs: tuple = ()) -> Iterable[R]:
    """``fn`` over ``items`` in a spawn process pool, results in completion order, few items in flight."""
    # spawn, not fork: GPU stages must not inherit a CUDA context, and workers start from a clean state.
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs) as pool:
        todo = iter(items)
        running: set[Future] = set()
        while True:
            for item in todo:
                running.add(pool.submit(fn, item))
                if len(running) >= workers * IN_FLIGHT_PER_WORKER:
                    break
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()  # a FatalError in a worker is re-raised here


def parallel_map(cfg: DataPipelineConfig, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``fn`` over ``items`` (shard writing) in the worker pool, or in this process with one worker."""
    workers = min(num_workers(cfg), len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    return list(pool_map(fn, items, workers))
