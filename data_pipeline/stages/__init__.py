"""The stages, by the name used in configs, manifests and logs."""
from __future__ import annotations

from data_pipeline.config import DataPipelineConfig
from data_pipeline.stages.base import Stage


def stage_class(name: str) -> type[Stage]:
    # Imported on demand: a worker only loads what its stage needs (torch, scenedetect, syncnet, ...).
    if name == "probe":
        from data_pipeline.stages.probe import ProbeStage as cls
    elif name == "split":
        from data_pipeline.stages.split import SplitStage as cls
    elif name == "audio_split":
        from data_pipeline.stages.audio_split import AudioSplitStage as cls
    elif name == "filter":
        from data_pipeline.stages.filter import FilterStage as cls
    elif name == "sync":
        from data_pipeline.stages.sync import SyncStage as cls
    elif name == "caption":
        from data_pipeline.stages.caption import CaptionStage as cls
    elif name == "pack":
        from data_pipeline.stages.pack import PackStage as cls
    else:
        raise ValueError(f"unknown stage {name!r}")
    return cls


def build_stage(name: str, cfg: DataPipelineConfig) -> Stage:
    return stage_class(name)(cfg)
