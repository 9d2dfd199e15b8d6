"""In-loop evaluation in a toy fusion run: held-out loss at fixed sigmas, clips + metrics + TensorBoard."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from ovi.checkpoints import save_fusion_checkpoint
from ovi.config import load_fusion_config
from ovi.models.fusion import FusionModel

from train.metrics import read_metrics
from train.precompute import main as precompute_main
from train.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[1]
CLIP = ["data.video.height=64", "data.video.width=64", "data.video.num_frames=9"]


def test_trainer_evaluates_every_n_steps(tmp_path: Path) -> None:
    write_dataset(tmp_path / "raw", 2, 2, video=True, seconds=1.0)
    precompute_main(["--config", str(REPO / "configs/train/fusion.yaml"), "--input", str(tmp_path / "raw"),
                     "--out", str(tmp_path / "lat"), "--store-dtype", "fp32", "encoders.kind=random", *CLIP])
    torch.manual_seed(0)  # a fresh model handed to the trainer as a "release" file
    save_fusion_checkpoint(FusionModel(load_fusion_config(REPO / "configs/model/tiny.yaml")),
                           tmp_path / "init.safetensors")
    inf = yaml.safe_load((REPO / "configs/inference/tiny_cpu.yaml").read_text())
    inf.update(num_frames=9, num_steps=2)  # two sampling steps of a 9-frame clip: the path, not the quality
    # A preset that makes its sound with V2A weights (as the toy's): the live model is evaluated with its own
    # weights, so a V2A file that does not exist yet (a rebuild's stage 3 writes it) is not read.
    inf.update(audio_from_video=True, conditioning="clean", checkpoints={"v2a": str(tmp_path / "absent.safetensors")})
    (tmp_path / "inf.yaml").write_text(yaml.safe_dump(inf))
    cmd = [sys.executable, "-m", "train.cli", "--config", "configs/train/fusion.yaml",
           f"model={REPO / 'configs/model/tiny.yaml'}", f"run_dir={tmp_path / 'run'}", "max_steps=2",
           f"data.shards=[{tmp_path / 'lat'}]", "data.batch_size=1", "data.bucket_batches=1",
           "data.decode_workers=0", *CLIP, "init.video_tower=null", "init.audio_tower=null",
           f"init.fusion={tmp_path / 'init.safetensors'}",
           "engine.precision=fp32", "engine.activation_checkpointing=false",
           "engine.deepspeed_config=configs/train/deepspeed/zero0.json", "checkpoint.every_steps=100000",
           "checkpoint.export_on_finish=false", "logging.every_steps=1",
           "evaluation.enabled=true", "evaluation.every_steps=2", f"evaluation.inference={tmp_path / 'inf.yaml'}",
           'evaluation.prompts=["A red ball bounces on the floor"]', f"evaluation.validation_shards=[{tmp_path / 'lat'}]",
           "evaluation.validation_samples=1", "evaluation.validation_sigmas=[0.5]"]
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    step_dir = tmp_path / "run" / "eval" / "step_0000002"
    clips = sorted(step_dir.glob("*.mp4"))
    assert [c.name for c in clips] == ["000_A_red_ball_bounces_on_the_floor_seed0.mp4"]
    assert json.loads(clips[0].with_suffix(".json").read_text())["prompt"] == "A red ball bounces on the floor"
    assert (step_dir / "metrics" / "metrics.json").exists()
    logged = {k: v for m in read_metrics(tmp_path / "run") if m["step"] == 2 for k, v in m.items()}
    assert logged["eval/val_loss"] > 0 and "eval/val_loss_sigma0.5" in logged
    assert any(k.startswith("eval/toy_") for k in logged)
    assert list((tmp_path / "run" / "tensorboard").glob("events.*"))
