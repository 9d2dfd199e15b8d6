"""Ray engine: the whole chain as one streaming Ray Data pipeline, one operator per stage.

    sources -> flat_map(probe) -> flat_map(split) -> ... -> flat_map(pack) -> driver (events only)

Stages without models (probe, split, pack, and any stage whose models are not configured) are plain Ray
tasks with the stage's ``num_cpus``; stages that load networks (SyncNet, S3FD/CLIP/RAFT filters, a local
captioning model) are actor pools, models loaded once per actor, sized by the cluster's GPUs when the stage
asks for ``num_gpus`` (by its CPUs otherwise). Ray Data streams rows between operators with backpressure, so
no stage waits for another to finish. Each operator records every input's result itself (``Chain.step``)
in the run's storage; the driver receives only small event rows, for progress, counts and the error ceiling.

Rows carry a record or an event as JSON text so Arrow never infers a schema for heterogeneous nested records.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterable, Sequence

from tqdm import tqdm

from data_pipeline.config import DataPipelineConfig
from data_pipeline.engines.chain import Chain, RunCounts
from data_pipeline.manifest import Record, dumps
from data_pipeline.stages import build_stage

log = logging.getLogger(__name__)

SOURCES_PER_BLOCK = 2
_chains: dict[tuple[str, str], Chain] = {}  # per worker process: plain tasks reuse the stage they built


def _row(record: Record | None = None, event: dict | None = None) -> dict:
    return {"record": dumps(record) if record is not None else None,
            "event": dumps(event) if event is not None else None}


def _apply(chain: Chain, name: str, row: dict, last: bool) -> list[dict]:
    if row["record"] is None:  # an event of an earlier stage travels on to the driver
        return [row]
    accepted, event = chain.step(name, json.loads(row["record"]))
    rows = [] if last else [_row(record=r) for r in accepted]
    return [*rows, _row(event=event.to_dict())]


class _StageActor:
    """One actor of a model-loading stage: builds (and loads) the stage once."""

    def __init__(self, cfg: DataPipelineConfig, name: str, last: bool) -> None:
        self.chain, self.name, self.last = Chain(cfg, [name]), name, last
        self.chain.stage(name)

    def __call__(self, row: dict) -> list[dict]:
        return _apply(self.chain, self.name, row, self.last)


def _task(cfg: DataPipelineConfig, name: str, last: bool) -> Callable[[dict], list[dict]]:
    key = (cfg.output, name)

    def step(row: dict) -> list[dict]:
        if key not in _chains:
            _chains[key] = Chain(cfg, [name])
        return _apply(_chains[key], name, row, last)

    return step


def _ensure_ray(cfg: DataPipelineConfig):
    try:
        import ray
    except ImportError as e:
        raise ImportError("--engine ray needs Ray Data: pip install 'ray[data]'") from e
    if not ray.is_initialized():
        # An address joins a running cluster; none starts a local instance (or uses RAY_ADDRESS if set).
        ray.init(address=cfg.engine.ray_address or None, include_dashboard=False, log_to_driver=False)
    return ray


def pool_size(cfg: DataPipelineConfig, name: str, cluster: dict[str, float]) -> int:
    """Actors for a model-loading stage: ``resources.workers`` / ``engine.workers`` if set, else as many as
    the cluster's GPUs (GPU stages) or CPUs (CPU stages) hold at the stage's per-actor request."""
    res = getattr(cfg, name).resources
    if res.workers or cfg.engine.workers:
        return int(res.workers or cfg.engine.workers)
    if res.num_gpus:
        gpus = cluster.get("GPU", 0.0)
        if gpus < res.num_gpus:
            raise RuntimeError(f"{name}.resources.num_gpus={res.num_gpus} but the Ray cluster has {gpus:g} GPUs; "
                               f"add GPU nodes or set {name}.resources.num_gpus=0 and {name}.device=cpu")
        return max(1, int(gpus // res.num_gpus))
    return max(1, int(cluster.get("CPU", 1.0) // max(res.num_cpus, 1e-3)))


def run_chain(cfg: DataPipelineConfig, names: Sequence[str], records: list[Record]) -> RunCounts:
    counts = RunCounts()
    if not records:
        return counts
    ray = _ensure_ray(cfg)
    cluster = ray.cluster_resources()
    # Small blocks: a block is the unit Ray hands a task, so few sources per block keeps every worker busy
    # (results are recorded per input by the workers, so block size does not affect what a crash loses).
    ds = ray.data.from_items([_row(record=r) for r in records],
                             override_num_blocks=max(1, -(-len(records) // SOURCES_PER_BLOCK)))
    for i, name in enumerate(names):
        last = i == len(names) - 1
        res = getattr(cfg, name).resources
        opts: dict[str, Any] = {"num_cpus": res.num_cpus}
        if res.num_gpus:
            opts["num_gpus"] = res.num_gpus
        if build_stage(name, cfg).loads_models:
            ds = ds.flat_map(_StageActor, fn_constructor_kwargs={"cfg": cfg, "name": name, "last": last},
                             concurrency=(1, pool_size(cfg, name, cluster)), **opts)
        else:
            ds = ds.flat_map(_task(cfg, name, last), **opts)
    with tqdm(total=len(records), desc="sources (ray)", unit="src", dynamic_ncols=True) as bar:
        for row in ds.iter_rows():
            event = json.loads(row["event"])
            counts.add(event)
            if event["stage"] == names[0]:
                bar.update()
            counts.check(cfg.engine.max_errors)
    return counts


def parallel_map(cfg: DataPipelineConfig, fn: Callable, items: Iterable) -> list:
    """``fn`` over ``items`` as Ray tasks (shard writing), results in completion order."""
    ray = _ensure_ray(cfg)
    remote = ray.remote(num_cpus=1)(fn)
    pending = [remote.remote(item) for item in items]
    out = []
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        out.extend(ray.get(done))
    return out
