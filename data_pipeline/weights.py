"""Which quality steps need which weights, where those are published, and the check that runs before a run.

The paper's filters are on by default. A run whose enabled steps lack their weights refuses to start with one
line naming the files and where to get them, unless those steps are disabled explicitly (config:
``sync.enabled=false``, ``filter.aesthetic.enabled=false``, ``filter.face.enabled=false``; CLI:
``--disable sync,aesthetic,face``). Motion needs no weights (OpenCV Farneback unless RAFT weights are given).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_pipeline.config import DataPipelineConfig

SYNCNET_PUBLISHED = "https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/ (syncnet-python's download_model.sh)"
CLIP_PUBLISHED = "https://huggingface.co/openai/clip-vit-large-patch14"
AESTHETIC_PUBLISHED = "https://github.com/christophschuhmann/improved-aesthetic-predictor"


@dataclass(frozen=True)
class Need:
    step: str  # the name --disable takes
    disable_key: str  # the config key that switches the step off
    key: str  # the config key holding the path
    path: str
    file: str  # what the file is
    published: str


class MissingWeights(ValueError):
    """Enabled quality steps without their weights; the message is one line naming files and sources."""


def quality_steps(cfg: DataPipelineConfig) -> dict[str, bool]:
    """Which weight-needing quality steps this run would apply (the summary reports it)."""
    video = cfg.mode == "video"
    return {"sync": video and "sync" in cfg.stage_names and cfg.sync.enabled,
            "aesthetic": video and "filter" in cfg.stage_names and cfg.filter.aesthetic.enabled,
            "face": video and "filter" in cfg.stage_names and cfg.filter.face.enabled,
            "motion": video and "filter" in cfg.stage_names and cfg.filter.motion.enabled}


def needs(cfg: DataPipelineConfig) -> list[Need]:
    on = quality_steps(cfg)
    out: list[Need] = []
    if on["sync"]:
        out += [Need("sync", "sync.enabled", "sync.s3fd_weights", cfg.sync.s3fd_weights, "sfd_face.pth",
                     SYNCNET_PUBLISHED),
                Need("sync", "sync.enabled", "sync.syncnet_weights", cfg.sync.syncnet_weights, "syncnet_v2.model",
                     SYNCNET_PUBLISHED)]
    if on["aesthetic"]:
        a = cfg.filter.aesthetic
        out += [Need("aesthetic", "filter.aesthetic.enabled", "filter.aesthetic.clip_model", a.clip_model,
                     "clip-vit-large-patch14 folder", CLIP_PUBLISHED),
                Need("aesthetic", "filter.aesthetic.enabled", "filter.aesthetic.predictor_weights",
                     a.predictor_weights, "sac+logos+ava1-l14-linearMSE.pth", AESTHETIC_PUBLISHED)]
    if on["face"]:
        out.append(Need("face", "filter.face.enabled", "filter.face.s3fd_weights", cfg.filter.face.s3fd_weights,
                        "sfd_face.pth", SYNCNET_PUBLISHED))
    if on["motion"] and cfg.filter.motion.raft_weights:
        out.append(Need("motion", "filter.motion.enabled", "filter.motion.raft_weights",
                        cfg.filter.motion.raft_weights, "torchvision RAFT state dict", "torchvision"))
    return out


def check_weights(cfg: DataPipelineConfig) -> None:
    """Raise ``MissingWeights`` when an enabled step's weights are not given or not on disk."""
    missing = [n for n in needs(cfg) if not n.path or not Path(n.path).exists()]
    if not missing:
        return
    files = "; ".join(f"{n.key}={n.path or '(empty)'}: {n.file} from {n.published}" for n in missing)
    steps = sorted({n.step for n in missing})
    keys = " ".join(f"{n.disable_key}=false" for n in missing if n.step in steps)
    raise MissingWeights(f"quality filters on by default need weights: {files}. Set those paths, or disable "
                         f"explicitly with --disable {','.join(steps)} (or {' '.join(dict.fromkeys(keys.split()))})")
