"""Two-process DeepSpeed runs (torchrun, gloo, client torch AdamW, CPU) of the tiny model, chained through the
stages as a lab would run them, ZeRO-2 and ZeRO-3 for each stage:

    pretrain_z2 (precomputed, variable length)  --export-->  finetune_z3 (FFN frozen)  --export-->
    fusion_z3 (bf16; video tower from a Wan-format file)  --export-->  fusion_z2 (on-the-fly encoding,
    from the "released" fusion file); plus pretrain_z3 and finetune_z2 on raw shards encoded on the fly,
    and a pretrain_z2 run killed while saving, then resumed on 2 processes and (a copy) on 1; a ZeRO-3 run
    started on 1 process and resumed on 2; ZeRO-3 and ZeRO-2 dry runs of the mid-size fusion model (per-rank
    memory); a trainer refused by a locked run folder.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ovi.checkpoints import load_fusion_checkpoint
from ovi.config import load_fusion_config
from ovi.denoise import Conditioning, GuidanceConfig, denoise
from ovi.models.fusion import init_tower_weights
from ovi.models.tower import Tower
from train.checkpoint import LATEST, TMP_PREFIX
from train.config import load_train_config
from train.metrics import read_metrics
from train.model_init import build_model
from train.precompute import main as precompute_main
from train.synthetic import write_dataset

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs/model/tiny.yaml"
MID = REPO / "configs/model/mid.yaml"  # 63M parameters: 242 MiB in fp32, enough to see memory per rank
Z2 = "engine.deepspeed_config=configs/train/deepspeed/zero2.json"
Z3 = "engine.deepspeed_config=configs/train/deepspeed/zero3.json"
TINY_AV = ["data.video.height=64", "data.video.width=64", "data.video.num_frames=9"]  # audio: 11 latents
COMMON = ["logging.every_steps=1", "checkpoint.every_steps=2", "optim.warmup_steps=2", "engine.precision=fp32",
          "checkpoint.export_dtype=fp32", "data.batch_size=2", "data.bucket_batches=2"]


@dataclass
class Run:
    dir: Path
    returncode: int
    log: str

    @property
    def metrics(self) -> dict[int, dict]:
        return {m["step"]: m for m in read_metrics(self.dir)}  # a resumed run re-logs steps: keep the last

    def export(self, stage: str) -> dict[str, torch.Tensor]:
        return load_file(str(self.dir / "export" / f"{stage}.safetensors"))


def torchrun(run_dir: Path, stage: str, *overrides: str, nproc: int = 2, cli: tuple[str, ...] = ()) -> Run:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "train.cli", *cli, "--config", f"configs/train/{stage}.yaml", f"model={TINY}", f"run_dir={run_dir}",
           *COMMON, *overrides]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    return Run(run_dir, done.returncode, done.stdout + done.stderr)


def ok(run: Run) -> Run:
    assert run.returncode == 0, run.log[-5000:]
    return run


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dist_data")
    audio = write_dataset(root / "audio", 5, 2, video=False, seconds=[1.5, 2.5, 3.0, 1.2, 2.0])
    av = write_dataset(root / "av", 4, 2, video=True, seconds=1.0)
    common = ["--store-dtype", "fp32", "encoders.kind=random"]
    precompute_main(["--config", str(REPO / "configs/train/audio_pretrain.yaml"), "--input", str(audio),
                     "--out", str(root / "audio_lat"), *common])
    precompute_main(["--config", str(REPO / "configs/train/fusion.yaml"), "--input", str(av),
                     "--out", str(root / "av_lat"), *common, *TINY_AV])
    # A video tower in Wan2.2's released naming and dtype (bf16), standing in for the TI2V-5B DiT.
    torch.manual_seed(11)
    wan = Tower(load_fusion_config(TINY).video)
    init_tower_weights(wan)
    torch.nn.init.normal_(wan.head.head.weight, std=0.02)  # a trained tower's head is not zero
    wan_file = root / "wan.safetensors"
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in wan.state_dict().items()}, str(wan_file))
    mid = load_fusion_config(MID)
    for side in ("video", "audio"):
        tower = Tower(getattr(mid, side), fusion=False)  # as released: no cross-modal layers (fresh in the run)
        init_tower_weights(tower)
        save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(root / f"mid_{side}.safetensors"))
    return {"audio": audio, "av": av, "audio_lat": root / "audio_lat", "av_lat": root / "av_lat", "wan": wan_file,
            "mid_video": root / "mid_video.safetensors", "mid_audio": root / "mid_audio.safetensors"}


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    root = tmp_path_factory.mktemp("dist_runs")
    r: dict[str, Run] = {}
    pretrain = ["max_steps=4", f"data.shards=[{data['audio_lat']}]", "data.audio.seconds=2.0"]
    r["pretrain_z2"] = ok(torchrun(root / "pretrain_z2", "audio_pretrain", Z2, *pretrain))
    r["killed"] = torchrun(root / "resume", "audio_pretrain", Z2, *pretrain, "debug.kill_in_save_at_step=4")
    shutil.copytree(root / "resume", root / "resume_1p")
    r["resumed"] = ok(torchrun(root / "resume", "audio_pretrain", Z2, *pretrain))
    # Elastic: the killed 2-rank run finished on 1 rank (accumulation 1 -> 2); a 1-rank ZeRO-3 run (accumulation 2)
    # continued on 2 ranks. Both have the reference's 2 micro-batches of 2 samples per step.
    r["resumed_1p"] = ok(torchrun(root / "resume_1p", "audio_pretrain", Z2, *pretrain, nproc=1))
    grow = [Z3, "max_steps=2", "engine.gradient_accumulation_steps=2", *pretrain[1:]]
    r["grow_1p"] = ok(torchrun(root / "grow", "audio_pretrain", *grow, nproc=1))
    r["grow_2p"] = ok(torchrun(root / "grow", "audio_pretrain", Z3, *pretrain))
    r["pretrain_z3"] = ok(torchrun(root / "pretrain_z3", "audio_pretrain", Z3, "max_steps=2", "data.source=raw",
                                   f"data.shards=[{data['audio']}]", "encoders.kind=random", "data.audio.seconds=2.0"))
    stage1 = r["pretrain_z2"].dir / "export/audio_pretrain.safetensors"
    finetune = ["max_steps=2", f"init.audio_tower={stage1}", "data.video.num_frames=9"]  # fixed audio of 9 frames
    r["finetune_z3"] = ok(torchrun(root / "finetune_z3", "audio_finetune", Z3, *finetune,
                                   f"data.shards=[{data['av_lat']}]", 'frozen=["*.ffn.*"]'))
    r["finetune_z2"] = ok(torchrun(root / "finetune_z2", "audio_finetune", Z2, *finetune, "data.source=raw",
                                   f"data.shards=[{data['av']}]", "encoders.kind=random"))
    stage2 = r["finetune_z3"].dir / "export/audio_finetune.safetensors"
    r["fusion_z3"] = ok(torchrun(root / "fusion_z3", "fusion", Z3, "max_steps=2", f"init.video_tower={data['wan']}",
                                 f"init.audio_tower={stage2}", f"data.shards=[{data['av_lat']}]", *TINY_AV,
                                 # bf16 weights, fp32 master copy; an fp32 export shows the master's small steps.
                                 "engine.precision=bf16", "logging.peak_tflops=1.0",
                                 "data.batch_size=1"))
    release = r["fusion_z3"].dir / "export/fusion.safetensors"
    r["fusion_z2"] = ok(torchrun(root / "fusion_z2", "fusion", Z2, "max_steps=2", "init.video_tower=null",
                                 "init.audio_tower=null", f"init.fusion={release}", "data.source=raw",
                                 f"data.shards=[{data['av']}]", "encoders.kind=random", *TINY_AV,
                                 "engine.gradient_accumulation_steps=2", "objective.first_frame_clean_prob=1.0"))
    # Dry runs of the fusion stage at mid size from two tower files (the 11B recipe's path), fp32.
    mid = [f"model={MID}", f"init.video_tower={data['mid_video']}", f"init.audio_tower={data['mid_audio']}",
           f"data.shards=[{data['av_lat']}]", *TINY_AV]
    r["dry_z3"] = ok(torchrun(root / "dry_z3", "fusion", Z3, *mid, cli=("--dry-run",)))
    r["dry_z2"] = ok(torchrun(root / "dry_z2", "fusion", Z2, *mid, cli=("--dry-run",)))
    return r


@pytest.mark.parametrize("name", ["pretrain_z2", "pretrain_z3", "finetune_z3", "finetune_z2", "fusion_z3", "fusion_z2"])
def test_every_stage_trains_and_logs(runs, name: str) -> None:
    run = runs[name]
    m = run.metrics
    steps = sorted(m)
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] in (2, 4)
    keys = {"loss", "loss_audio", "grad_norm", "lr", "samples_per_s", "tokens_per_s", "step_time_s",
            "tflops_per_device"}
    for s in steps:
        assert keys <= set(m[s]) and all(math.isfinite(m[s][k]) for k in keys), m[s]
        assert m[s]["grad_norm"] > 0 and m[s]["tokens_per_s"] > 0
    assert m[1]["lr"] == pytest.approx(m[2]["lr"] / 2)  # linear warm-up over 2 steps
    if name.startswith("fusion"):
        assert all(math.isfinite(m[s]["loss_video"]) for s in steps)
        assert m[1]["loss"] == pytest.approx(0.85 * m[1]["loss_video"] + 0.15 * m[1]["loss_audio"], rel=1e-5)
    assert "trainable" in run.log and "frozen" in run.log  # the parameter summary is printed at start
    assert (run.dir / "tensorboard").is_dir()


def test_resume_after_kill_reproduces_the_losses(runs) -> None:
    killed, resumed, reference = runs["killed"], runs["resumed"], runs["pretrain_z2"]
    assert killed.returncode != 0
    ckpt = resumed.dir / "checkpoints"
    assert "resumed from" in resumed.log and "step_000002" in resumed.log  # the killed save of step 4 never committed
    assert (ckpt / LATEST).read_text() == "step_000004" and not list(ckpt.glob(TMP_PREFIX + "*"))
    for step in (1, 2, 3, 4):
        assert resumed.metrics[step]["loss"] == reference.metrics[step]["loss"], step
        assert resumed.metrics[step]["grad_norm"] == reference.metrics[step]["grad_norm"], step
    a, b = resumed.export("audio_pretrain"), reference.export("audio_pretrain")
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_pretraining_changes_every_tensor_from_its_init(runs) -> None:
    run = runs["pretrain_z2"]
    cfg = load_train_config(REPO / "configs/train/audio_pretrain.yaml", [f"model={TINY}", "engine.precision=fp32"])
    torch.manual_seed(cfg.seed)  # the trainer's initial weights
    init = build_model(cfg, load_fusion_config(TINY)).state_dict()
    out = run.export("audio_pretrain")
    assert set(out) == set(init)
    assert sum(not torch.equal(out[k], init[k]) for k in init) == len(init)


def test_frozen_stay_bit_identical_and_trainable_change_zero3(runs) -> None:
    before = runs["pretrain_z2"].export("audio_pretrain")
    after = runs["finetune_z3"].export("audio_finetune")
    for k in before:
        assert torch.equal(after[k], before[k]) == (".ffn." in k), k


def test_fusion_from_wan_and_stage2_freezes_ffn_and_trains_attention(runs, data) -> None:
    wan = load_file(str(data["wan"]))
    audio = runs["finetune_z3"].export("audio_finetune")
    out = runs["fusion_z3"].export("fusion")
    for k, v in out.items():
        side, rest = k.split(".", 1)
        if "_fusion." in rest:
            continue
        src = wan[rest] if side == "video_model" else audio[rest].to(torch.bfloat16)
        trained = ".self_attn." in rest or ".cross_attn." in rest
        assert torch.equal(v, src) != trained, k
    ratio = out["video_model.blocks.0.cross_attn.k_fusion.weight"].float().std() / \
        out["audio_model.blocks.0.cross_attn.k_fusion.weight"].float().std()
    assert 0.07 < float(ratio) < 0.14  # fresh cross-modal layers, the video tower's scaled by 1/10
    assert all("mfu" in m for m in runs["fusion_z3"].metrics.values())


def test_fine_tuning_a_fusion_file_keeps_frozen_weights(runs) -> None:
    start = runs["fusion_z3"].export("fusion")
    out = runs["fusion_z2"].export("fusion")
    for k in start:
        trained = ".self_attn." in k or ".cross_attn." in k
        assert torch.equal(out[k], start[k]) != trained, k


def test_fusion_export_loads_in_the_release_format_and_samples(runs) -> None:
    path = runs["fusion_z2"].dir / "export/fusion.safetensors"
    model = load_fusion_checkpoint(path, load_fusion_config(TINY), dtype=torch.float32)  # strict, release keys
    g = torch.Generator().manual_seed(0)
    xv, xa = torch.randn(48, 3, 4, 4, generator=g), torch.randn(31, 20, generator=g)
    text = [torch.randn(n, 4096, generator=g) * 0.1 for n in (5, 2, 3)]
    guide = GuidanceConfig("unipc", num_steps=3, shift=5.0, video_scale=4.0, audio_scale=3.0, slg_layer=1)
    with torch.no_grad():  # the generation pipeline's loop: CFG on both modalities, skip-layer guidance
        xv, xa = denoise(model, xv, xa, Conditioning(*text), guide, progress=False)
    assert xv.shape == (48, 3, 4, 4) and xa.shape == (31, 20)
    assert torch.isfinite(xv).all() and torch.isfinite(xa).all()
    meta = json.loads((runs["fusion_z2"].dir / "checkpoints/step_000002/trainer.json").read_text())
    assert meta["stage"] == "fusion" and meta["world_size"] == 2


def test_export_only_writes_the_matching_tensors_of_the_full_export(runs, tmp_path) -> None:
    from train.export import export_checkpoint

    step = runs["fusion_z2"].dir / "checkpoints/step_000002"
    full = export_checkpoint(step, tmp_path / "full.safetensors", torch.float32)
    part = export_checkpoint(step, tmp_path / "audio.safetensors", torch.float32, only=["audio_model.*"])
    full, part = load_file(full), load_file(part)
    assert set(part) == {k for k in full if k.startswith("audio_model.")} and part
    assert all(torch.equal(part[k], full[k]) for k in part)
    with pytest.raises(ValueError, match="matches no tensor"):
        export_checkpoint(step, tmp_path / "none.safetensors", only=["nope.*"])


def build_peaks(run: Run) -> list[float]:
    """Per rank: peak host memory of the model build, as a fraction of the whole model's parameters."""
    return [float(x) for x in re.findall(r"rank \d: build peak \+\d+ MiB host \(([\d.]+) x the", run.log)]


def test_zero3_builds_about_one_over_world_of_the_model_per_rank(runs) -> None:
    zero3, zero2 = build_peaks(runs["dry_z3"]), build_peaks(runs["dry_z2"])
    assert len(zero3) == len(zero2) == 2, runs["dry_z3"].log[-3000:]
    # 1/2 of the model on 2 ranks (partitioned as built, files read by rank 0) plus DeepSpeed's ~46 MiB overhead.
    assert all(0.3 < f < 0.75 for f in zero3), zero3
    assert all(f > 0.9 for f in zero2), zero2  # ZeRO-2 keeps whole weights on every rank: what the probe sees
    assert "model built (ZeRO-3 partitioned)" in runs["dry_z3"].log
    assert not list((runs["dry_z3"].dir / "checkpoints").glob("step_*"))  # a dry run trains nothing


@pytest.mark.parametrize("name, layout", [("resumed_1p", "written by 2 rank(s), now 1"),
                                          ("grow_2p", "written by 1 rank(s), now 2")])
def test_resume_on_another_world_size_continues_the_run(runs, name: str, layout: str) -> None:
    run, reference = runs[name], runs["pretrain_z2"]  # the reference: 2 ranks throughout, ZeRO-2
    assert layout in run.log and "resumed from" in run.log
    steps = (3, 4) if name == "resumed_1p" else (1, 2, 3, 4)  # grow: steps 1-2 ran on 1 rank (grow_1p)
    metrics = {**(runs["grow_1p"].metrics if name == "grow_2p" else {}), **run.metrics}
    for step in steps:  # same samples, same noise; only the order of fp32 sums differs
        assert metrics[step]["loss"] == pytest.approx(reference.metrics[step]["loss"], rel=1e-4), step
        assert metrics[step]["grad_norm"] == pytest.approx(reference.metrics[step]["grad_norm"], rel=1e-3), step
    # The data position carried over exactly: every slot's stream and noise state equals the reference's.
    for slot in (0, 1):
        mine = torch.load(run.dir / "checkpoints/step_000004" / f"trainer_slot{slot:05d}.pt", weights_only=False)
        ref = torch.load(reference.dir / "checkpoints/step_000004" / f"trainer_slot{slot:05d}.pt", weights_only=False)
        assert mine["data_state"] == ref["data_state"] and torch.equal(mine["objective_rng"], ref["objective_rng"])
    a, b = run.export("audio_pretrain"), reference.export("audio_pretrain")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in b)


def test_a_second_trainer_on_a_locked_run_folder_is_refused(data, tmp_path: Path) -> None:
    run_dir = tmp_path / "locked"
    hold = (f"from train.run_lock import RunLock; import time; RunLock({str(run_dir)!r}).acquire(); "
            "print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", hold], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cmd = [sys.executable, "-m", "train.cli", "--config", "configs/train/audio_pretrain.yaml", f"model={TINY}",
               f"run_dir={run_dir}", f"data.shards=[{data['audio_lat']}]", "data.audio.seconds=2.0", "max_steps=1"]
        env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 2, done.stderr[-3000:]
        assert f"in use by another trainer (host {os.uname().nodename}, pid {holder.pid}" in done.stderr
        assert "model built" not in done.stderr and not (run_dir / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
