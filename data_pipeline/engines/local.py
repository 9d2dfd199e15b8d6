"""Local engine: a process pool (one stage object per worker, models loaded once per worker), a bounded
number of records in flight, a progress bar, and the manifest appended in the driver as results arrive.
With one worker the stage runs in the driver process itself (simplest to debug)."""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Optional

from tqdm import tqdm

from data_pipeline.config import DataPipelineConfig
from data_pipeline.manifest import Manifest, Record
from data_pipeline.stages import Stage, build_stage

IN_FLIGHT_PER_WORKER = 2  # enough to keep workers busy, few enough that a kill loses little work

_worker_stage: Optional[Stage] = None


def _init_worker(stage_name: str, cfg: DataPipelineConfig) -> None:
    global _worker_stage
    _worker_stage = build_stage(stage_name, cfg)
    _worker_stage.setup()


def _run_one(record: Record) -> tuple[str, list[Record]]:
    assert _worker_stage is not None, "worker used before its initializer ran"
    return record["id"], _worker_stage.run(record)


def num_workers(stage_name: str, cfg: DataPipelineConfig) -> int:
    res = getattr(cfg, stage_name).resources
    return res.workers or cfg.engine.workers or os.cpu_count() or 1


def run_stage(stage_name: str, cfg: DataPipelineConfig, records: list[Record], manifest: Manifest) -> None:
    if not records:
        return
    workers = min(num_workers(stage_name, cfg), len(records))
    bar = tqdm(total=len(records), desc=stage_name, unit="item", dynamic_ncols=True)
    try:
        if workers <= 1:
            stage = build_stage(stage_name, cfg)
            stage.setup()
            for record in records:
                manifest.append(record["id"], stage.run(record))
                bar.update()
            return
        # spawn, not fork: GPU stages must not inherit a CUDA context, and workers start from a clean state.
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(stage_name, cfg)) as pool:
            todo = iter(records)
            running: set[Future] = set()
            while True:
                for record in todo:
                    running.add(pool.submit(_run_one, record))
                    if len(running) >= workers * IN_FLIGHT_PER_WORKER:
                        break
                if not running:
                    break
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    input_id, outputs = fut.result()  # a worker's exception is a bug: re-raised here
                    manifest.append(input_id, outputs)
                    bar.update()
    finally:
        bar.close()
