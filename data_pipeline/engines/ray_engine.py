"""Ray engine: each stage is a Ray Data ``map`` over its pending records, run by a pool of actors that each
build the stage once (models load once per actor) with the stage's own ``num_cpus``/``num_gpus``. Results
stream back to the driver, which appends them to the same manifest the local engine writes.

Records travel as JSON strings so Arrow never has to infer a schema for heterogeneous nested records.
"""
from __future__ import annotations

import json
import logging

from tqdm import tqdm

from data_pipeline.config import DataPipelineConfig
from data_pipeline.manifest import Manifest, Record, dumps
from data_pipeline.stages import build_stage

log = logging.getLogger(__name__)


class _StageActor:
    def __init__(self, stage_name: str, cfg: DataPipelineConfig) -> None:
        self.stage = build_stage(stage_name, cfg)
        self.stage.setup()

    def __call__(self, row: dict) -> dict:
        record = json.loads(row["record"])
        return {"input": record["id"], "outputs": dumps(self.stage.run(record))}


def _ensure_ray(cfg: DataPipelineConfig):
    try:
        import ray
    except ImportError as e:
        raise ImportError("--engine ray needs Ray Data: pip install 'ray[data]'") from e
    if not ray.is_initialized():
        # An address joins a running cluster; none starts a local instance (or uses RAY_ADDRESS if set).
        ray.init(address=cfg.engine.ray_address or None, include_dashboard=False, log_to_driver=False)
    return ray


def run_stage(stage_name: str, cfg: DataPipelineConfig, records: list[Record], manifest: Manifest) -> None:
    if not records:
        return
    ray = _ensure_ray(cfg)
    res = getattr(cfg, stage_name).resources
    cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = max(1, min(len(records), res.workers or cfg.engine.workers or cluster_cpus))
    ds = ray.data.from_items([{"record": dumps(r)} for r in records])
    ds = ds.map(_StageActor, fn_constructor_kwargs={"stage_name": stage_name, "cfg": cfg}, concurrency=actors,
                num_cpus=res.num_cpus, num_gpus=res.num_gpus or None)
    with tqdm(total=len(records), desc=f"{stage_name} (ray)", unit="item", dynamic_ncols=True) as bar:
        for row in ds.iter_rows():
            manifest.append(row["input"], json.loads(row["outputs"]))
            bar.update()
