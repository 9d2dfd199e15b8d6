"""Trainer set-up without launching training: configs, trainable patterns, weight loading, the DeepSpeed
config, the learning-rate schedule, the FLOP estimate and atomic checkpoint commits."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from ovi.config import InferenceConfig, load_fusion_config
from ovi.models.fusion import FusionModel, init_tower_weights
from ovi.models.stream import Stream
from ovi.models.tower import Tower
from train.checkpoint import LATEST, TMP_PREFIX, Checkpointer, TrainerState, latest_checkpoint
from train.config import load_train_config
from train.engine import deepspeed_config, lr_lambda
from train.metrics import tower_flops
from train.model_init import build_model, load_weights
from train.params import apply_trainable

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs/model/tiny.yaml"
STAGES = ["audio_pretrain", "audio_finetune", "fusion", "fusion_release_finetune"]


def cfg(stage: str, *overrides: str):
    return load_train_config(REPO / f"configs/train/{stage}.yaml", [f"model={TINY}", *overrides])


@pytest.mark.parametrize("stage", STAGES)
def test_shipped_configs_load_with_the_papers_optimizer(stage: str) -> None:
    c = cfg(stage)
    fusion = c.stage == "fusion"
    paper = (5e-5, [0.9, 0.95], 1e-8) if fusion else (1e-4, [0.9, 0.999], 1e-8)
    assert (c.optim.lr, c.optim.betas, c.optim.eps) == paper
    if fusion:
        assert (c.objective.loss_weight_video, c.objective.loss_weight_audio) == (0.85, 0.15)
    if stage == "audio_pretrain":
        assert (c.data.audio.mode, c.data.audio.seconds) == ("variable", 12.0)
    else:  # fixed-length audio: the audio of the 121-frame clip the released 5 s models sample
        assert (c.data.audio.mode, c.data.audio.seconds) == ("fixed", None)
        assert (c.data.geometry.audio_latents, c.data.geometry.audio_samples) == (157, 80_384)


def test_ten_second_recipe_trains_the_length_the_sampler_generates() -> None:
    c = cfg("fusion_release_finetune", "data.video.num_frames=241")
    assert c.data.geometry == InferenceConfig(num_frames=241).geometry
    assert (c.data.geometry.latent_frames, c.data.geometry.audio_latents) == (61, 314)
    # The old spelling of the 10 s recipe (313 latents) is refused, naming the key that sets the length.
    with pytest.raises(ValueError, match="data.video.num_frames"):
        cfg("fusion_release_finetune", "data.video.num_frames=241", "data.audio.seconds=10.04")
    with pytest.raises(ValueError, match="needs data.audio.seconds"):
        cfg("audio_pretrain", "data.audio.seconds=null")


def test_misspelt_and_inconsistent_keys_are_errors() -> None:
    with pytest.raises(ValueError, match="optim"):
        cfg("fusion", "optim.learning_rate=1")
    with pytest.raises(ValueError, match="loss_weight"):
        cfg("fusion", "objective.loss_weight_video=null")
    with pytest.raises(ValueError, match="init.fusion loads both"):
        cfg("fusion", "init.fusion=x.safetensors")
    with pytest.raises(ValueError, match="multiples of 32"):
        cfg("fusion", "data.video.height=100")
    with pytest.raises(ValueError, match="evaluation.every_steps must be >= 1.*evaluation.enabled=false"):
        cfg("fusion", "evaluation.every_steps=0")  # a modulus in the loop: refused before the run, not at step 1
    with pytest.raises(ValueError, match="audio_onset_weight must be >= 0"):
        cfg("fusion", "objective.audio_onset_weight=-1")
    with pytest.raises(ValueError, match="video_motion_weight must be >= 0"):
        cfg("fusion", "objective.video_motion_weight=-0.5")
    with pytest.raises(ValueError, match="checkpoint.every_steps must be >= 1"):
        cfg("fusion", "checkpoint.every_steps=-5")


def test_fusion_default_trains_attention_only() -> None:
    c = cfg("fusion")
    model = FusionModel(load_fusion_config(TINY))
    counts = apply_trainable(model, c.trainable, c.frozen)
    for name, p in model.named_parameters():
        attention = ".self_attn." in name or ".cross_attn." in name
        assert p.requires_grad == attention, name
    assert counts.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert "cross_attn (fusion)" in counts.summary()
    with pytest.raises(ValueError, match="matches no parameter"):
        apply_trainable(model, ["*.self_atn.*"], [])
    apply_trainable(model, ["*"], ["*.ffn.*"])
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".ffn." in n)


def test_fusion_init_from_wan_tower_and_stage1_audio(tmp_path: Path) -> None:
    mcfg = load_fusion_config(TINY)
    torch.manual_seed(3)
    video, audio = Tower(mcfg.video), Tower(mcfg.audio)
    init_tower_weights(video), init_tower_weights(audio)
    # Wan releases its DiT as shards with an index; emulate that layout.
    wan = tmp_path / "wan"
    wan.mkdir()
    state = video.state_dict()
    names = sorted(state)
    parts = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in parts.items():
        save_file({k: state[k].contiguous() for k in keys}, str(wan / file))
    weight_map = {k: f for f, keys in parts.items() for k in keys}
    (wan / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    save_file({k: v.contiguous() for k, v in audio.state_dict().items()}, str(tmp_path / "audio.safetensors"))

    c = cfg("fusion", f"init.video_tower={wan}", f"init.audio_tower={tmp_path / 'audio.safetensors'}",
            "engine.precision=fp32")
    torch.manual_seed(0)
    model = build_model(c, mcfg)
    for name, p in model.named_parameters():
        side, rest = name.split(".", 1)
        if "_fusion." in rest:
            continue
        src = (video if side == "video_model" else audio).state_dict()[rest]
        assert torch.equal(p, src), name
    k_v = model.video_model.blocks[0].cross_attn.k_fusion.weight
    k_a = model.audio_model.blocks[0].cross_attn.k_fusion.weight
    assert 0.07 < float(k_v.detach().std() / k_a.detach().std()) < 0.14  # the video tower's are scaled by 1/10
    assert model.gradient_checkpointing

    small = Tower(load_fusion_config(TINY, ["audio.dim=64", "audio.ffn_dim=64", "audio.num_heads=2"]).audio)
    with pytest.raises(ValueError, match="mis-shaped"):
        load_weights(small, tmp_path / "audio.safetensors", what="init.audio_tower")


def test_audio_tower_from_an_ovi_fusion_file(tmp_path: Path) -> None:
    mcfg = load_fusion_config(TINY)
    fusion = FusionModel(mcfg)
    save_file({k: v.contiguous() for k, v in fusion.state_dict().items()}, str(tmp_path / "ovi.safetensors"))
    model = build_model(cfg("audio_finetune", f"init.audio_tower={tmp_path / 'ovi.safetensors'}",
                            "engine.precision=fp32"), mcfg)
    for name, p in model.named_parameters():
        assert torch.equal(p, fusion.state_dict()["audio_model." + name]), name


def test_deepspeed_config_is_filled_from_the_trainer_config(tmp_path: Path) -> None:
    c = cfg("fusion", "data.batch_size=2", "engine.gradient_accumulation_steps=3", "optim.grad_clip=0.5")
    ds = deepspeed_config(c, world_size=4)
    assert ds["zero_optimization"]["stage"] == 3
    sizes = ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]
    assert sizes == (2, 3, 24)
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"] == {"enabled": True}
    assert deepspeed_config(cfg("audio_pretrain"), 1)["zero_optimization"]["stage"] == 2
    assert "communication_data_type" not in ds and "checkpoint" not in ds  # DeepSpeed's bf16 reduction by default
    fp32 = deepspeed_config(cfg("fusion", "engine.grad_reduce_dtype=fp32"), 4, load_universal=True)
    assert fp32["communication_data_type"] == "fp32" and fp32["data_types"] == {"grad_accum_dtype": "fp32"}
    assert fp32["checkpoint"] == {"load_universal": True}
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 2}, "gradient_clipping": 2.0}))
    with pytest.raises(ValueError, match="gradient_clipping"):
        deepspeed_config(cfg("fusion", f"engine.deepspeed_config={bad}"), 1)


def test_lr_schedule_warmup_then_decay() -> None:
    c = cfg("fusion", "optim.warmup_steps=10", "optim.schedule=cosine", "optim.min_lr_ratio=0.1", "max_steps=110")
    f = lr_lambda(c.optim, c.max_steps)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    const = cfg("fusion", "optim.warmup_steps=0")
    assert lr_lambda(const.optim, 100)(0) == 1.0 and lr_lambda(const.optim, 100)(99) == 1.0


def test_flop_estimate_matches_autograds_count() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    mcfg = load_fusion_config(TINY)
    model = FusionModel(mcfg)
    torch.nn.init.normal_(model.video_model.head.head.weight, std=0.02)
    full = tower_flops(model.audio_model, mcfg.audio).train_flops(100, 50)
    apply_trainable(model, cfg("fusion").trainable, [])
    assert tower_flops(model.audio_model, mcfg.audio).train_flops(100, 50) < full  # frozen: no weight grads
    video, audio = [torch.randn(48, 2, 4, 4)], [torch.randn(30, 20)]
    text = [torch.randn(5, 4096)]
    with FlopCounterMode(display=False) as counter:  # counts matmuls and convs (not CPU SDPA attention)
        t = torch.tensor([500.0])
        v, a = model(Stream(video, t, text), Stream(audio, t, text))
        (v[0].sum() + a[0].sum()).backward()
    lv, la = 2 * 2 * 2, 30
    est = tower_flops(model.video_model, mcfg.video).linear_flops(lv, la) + \
        tower_flops(model.audio_model, mcfg.audio).linear_flops(la, lv)
    assert est == pytest.approx(counter.get_total_flops(), rel=0.02)


class FakeEngine:
    """What Checkpointer needs from a DeepSpeed engine: save/load of its own files."""

    def __init__(self, value: float):
        self.value = value

    def save_checkpoint(self, save_dir: str, tag: str, save_latest: bool, client_state: dict) -> None:
        assert not save_latest
        os.makedirs(os.path.join(save_dir, tag), exist_ok=True)
        torch.save({"value": self.value}, os.path.join(save_dir, tag, "mp_rank_00_model_states.pt"))

    def load_checkpoint(self, load_dir: str, tag: str, load_module_strict: bool = True):
        self.value = torch.load(os.path.join(load_dir, tag, "mp_rank_00_model_states.pt"))["value"]
        return os.path.join(load_dir, tag), {}


@pytest.fixture
def one_rank_group(tmp_path: Path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_save_killed_before_commit_leaves_the_last_good_checkpoint(tmp_path: Path, one_rank_group) -> None:
    ck = Checkpointer(tmp_path / "ckpt", rank=0, world_size=1, keep_last=2)
    gen = torch.Generator().manual_seed(1)
    ck.save(FakeEngine(1.0), TrainerState.capture(10, {0: ({"pos": 10}, gen)}), {"stage": "fusion"})

    def die() -> None:
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        ck.save(FakeEngine(2.0), TrainerState.capture(20, {0: ({"pos": 20}, gen)}), {"stage": "fusion"},
                before_commit=die)
    assert (tmp_path / "ckpt" / LATEST).read_text() == "step_000010"
    assert (tmp_path / "ckpt" / f"{TMP_PREFIX}step_000020").is_dir()
    ck.clean_partial()
    assert not list((tmp_path / "ckpt").glob(TMP_PREFIX + "*"))
    engine = FakeEngine(0.0)
    state = ck.load(engine, latest_checkpoint(tmp_path / "ckpt"), slots=[0])
    assert engine.value == 1.0 and state.step == 10 and state.slots[0].data_state == {"pos": 10}
    for step in (30, 40):
        ck.save(FakeEngine(float(step)), TrainerState.capture(step, {0: ({}, gen)}), {"stage": "fusion"})
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("step_*")) == ["step_000030", "step_000040"]
    with pytest.raises(RuntimeError, match="data slot"):  # a layout that does not cover the run's slots
        ck.load(FakeEngine(0.0), latest_checkpoint(tmp_path / "ckpt"), slots=[1])


def test_a_truncated_newest_checkpoint_falls_back_to_the_newest_intact(tmp_path: Path, one_rank_group,
                                                                       caplog) -> None:
    ck = Checkpointer(tmp_path / "ckpt", rank=0, world_size=1, keep_last=3)
    gen = torch.Generator().manual_seed(1)
    for step in (10, 20, 30):
        ck.save(FakeEngine(float(step)), TrainerState.capture(step, {0: ({"pos": step}, gen)}), {"stage": "fusion"})
    newest = tmp_path / "ckpt" / "step_000030" / "mp_rank_00_model_states.pt"
    newest.write_bytes(newest.read_bytes()[:-7])  # a save cut short by a full disk, committed by an old version
    (tmp_path / "ckpt" / "step_000020" / "trainer_slot00000.pt").unlink()
    with caplog.at_level("WARNING"):
        path = latest_checkpoint(tmp_path / "ckpt")
    assert path.name == "step_000010"
    assert "step_000030: mp_rank_00_model_states.pt has" in caplog.text and "trainer_slot00000.pt is missing" in caplog.text
    engine = FakeEngine(0.0)
    assert ck.load(engine, path, slots=[0]).slots[0].data_state == {"pos": 10} and engine.value == 10.0
    (tmp_path / "ckpt" / "step_000010" / "trainer.json").write_text("{")
    with pytest.raises(RuntimeError, match="no intact checkpoint"):
        latest_checkpoint(tmp_path / "ckpt")


def test_rng_state_round_trip(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(7)
    torch.rand(3, generator=gen)
    state = TrainerState.capture(5, {3: ({}, gen)})
    expected = torch.rand(4, generator=gen), torch.rand(2)
    other = torch.Generator().manual_seed(99)
    state.restore_rng({3: other})
    assert torch.equal(torch.rand(4, generator=other), expected[0]) and torch.equal(torch.rand(2), expected[1])


def test_run_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys
    import time

    from train.run_lock import RunLock, RunLocked

    lock = RunLock(tmp_path, stale_s=60)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {"host": socket.gethostname(), "pid": sleeper.pid, "started": "then"}
        lock.path.write_text(json.dumps(owner))
        with pytest.raises(RunLocked, match=f"pid {sleeper.pid}"):
            lock.acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    lock.acquire()  # its pid is gone: stale, taken over
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock.path.exists()
    other = RunLock(tmp_path, stale_s=60)  # another host: judged by how long ago the owner touched the lock
    lock.path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "then"}))
    with pytest.raises(RunLocked, match="host elsewhere"):
        other.acquire()
    old = time.time() - 120
    os.utime(lock.path, (old, old))
    other.acquire()
    assert other.held


def test_preflight_reports_every_missing_input_in_one_line_each(tmp_path: Path, monkeypatch) -> None:
    from train.preflight import run_checks

    c = cfg("fusion", f"run_dir={tmp_path / 'run'}", f"data.shards=[{tmp_path / 'nowhere'}]",
            f"init.video_tower={tmp_path / 'wan'}", f"init.audio_tower={tmp_path / 'a.safetensors'}",
            "engine.deepspeed_config=configs/train/deepspeed/zero3.json")
    monkeypatch.chdir(REPO)
    found = run_checks(c, world=8, lock=None)
    text = "\n".join(found.problems)
    assert len(found.problems) == 2 and all("\n" not in p for p in found.problems), text
    assert "weights not found" in text and "init.video_tower" in text  # the 11B model is never built
    assert text.count("data.shards: no index.json") == 1
    assert (tmp_path / "run").is_dir()  # writable, checked by writing
