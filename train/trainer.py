"""The training loop shared by all stages: data -> (encoders) -> flow-matching objective -> DeepSpeed step,
with logging, atomic checkpoints, exact resume and a final export."""
from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from ovi.config import load_fusion_config
from train.checkpoint import Checkpointer, TrainerState, latest_checkpoint
from train.config import TrainConfig
from train.data.latents import load_null_prompt
from train.data.loader import Batch, BatchStream
from train.encoders import Encoders, build_encoders
from train.engine import build_engine, init_distributed
from train.export import DTYPES, export_checkpoint
from train.metrics import MetricsSink, detect_peak_tflops, tower_flops
from train.model_init import build_model
from train.objective import FlowMatchingObjective, combine_losses, mse
from train.params import apply_trainable

log = logging.getLogger(__name__)


def derived_seed(seed: int, rank: int, what: str) -> int:
    """A 63-bit seed that differs per (run seed, rank, purpose) and never collides in practice."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{rank}/{what}".encode()).digest()[:8], "little") >> 1


def _kill_self(where: str) -> None:
    log.warning("debug: SIGKILL %s", where)
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.dist = init_distributed(cfg.engine.dist_backend, cfg.engine.cpu_shm_comm)
        self.rank, self.world, self.device = self.dist.rank, self.dist.world_size, self.dist.device
        self.fusion = cfg.stage == "fusion"
        self.model_cfg = load_fusion_config(cfg.model)

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        model = build_model(cfg, self.model_cfg)
        counts = apply_trainable(model, cfg.trainable, cfg.frozen)
        self.log0("stage %s, %d rank(s), model %s\n%s", cfg.stage, self.world, cfg.model, counts.summary())
        if self.fusion:
            self.flops = (tower_flops(model.video_model, self.model_cfg.video),
                          tower_flops(model.audio_model, self.model_cfg.audio))
        else:
            self.flops = (None, tower_flops(model, self.model_cfg.audio))
        self.engine = build_engine(model, cfg, self.dist)
        self.dtype = torch.bfloat16 if cfg.engine.precision == "bf16" else torch.float32
        torch.manual_seed(derived_seed(cfg.seed, self.rank, "torch"))

        self.text_len = min(self.model_cfg.audio.text_len, self.model_cfg.video.text_len)
        self.encoders: Optional[Encoders] = None
        if cfg.data.source == "raw":
            self.encoders = build_encoders(cfg.encoders, self.fusion, self.device)
            null = self.encoders.text.encode([cfg.objective.null_prompt])[0]
        else:
            null = load_null_prompt(cfg.data.shards[0], cfg.objective.null_prompt)
        self.objective_rng = torch.Generator().manual_seed(derived_seed(cfg.seed, self.rank, "objective"))
        self.objective = FlowMatchingObjective(
            cfg.objective, self._fit_text(null).to(self.device), self.objective_rng
        )

        self.checkpointer = Checkpointer(cfg.checkpoint_dir, self.rank, self.world, cfg.checkpoint.keep_last)
        self.step, data_state = 0, None
        if cfg.checkpoint.resume:
            self.checkpointer.clean_partial()
            path = latest_checkpoint(cfg.checkpoint_dir)
            if path is not None:
                state = self.checkpointer.load(self.engine, path)
                state.restore_rng(self.objective_rng)
                self.step, data_state = state.step, state.data_state
                self.log0("resumed from %s at step %d", path, self.step)
        self.data_state = data_state
        self.batches = iter(BatchStream(cfg, self.rank, data_state))
        self.sink = None
        if self.rank == 0:
            wandb_cfg = {"project": cfg.logging.wandb_project, "name": cfg.logging.wandb_run_name}
            self.sink = MetricsSink(
                Path(cfg.run_dir),
                cfg.logging.tensorboard,
                wandb_cfg if cfg.logging.wandb else None,
                OmegaConf.to_container(OmegaConf.structured(cfg)),
            )
        self.peak_tflops = cfg.logging.peak_tflops or detect_peak_tflops()

    def log0(self, msg: str, *args) -> None:
        if self.rank == 0:
            log.info(msg, *args)

    # -- one micro-batch ----------------------------------------------------------------------
    def _fit_text(self, c: torch.Tensor) -> torch.Tensor:
        """Contexts longer than the model's text_len are cut (UMT5 gives at most 512 = the released text_len)."""
        return c[: self.text_len]

    def _latents(self, batch: Batch):
        """-> (video latents or None, audio latents [L, 20], text [L_text, 4096]) on the device."""
        s = batch.samples
        if self.encoders is None:
            video = [x.video.to(self.device) for x in s] if self.fusion else None
            audio = [x.audio.to(self.device) for x in s]
            text = [x.text.to(self.device) for x in s]
        else:
            with torch.no_grad():
                text = self.encoders.text.encode([x.caption for x in s])
                audio = [self.encoders.audio.encode(x.audio[None].to(self.device))[0].T for x in s]  # [L, 20]
                video = None
                if self.fusion:
                    video = [self.encoders.video.encode(x.video[None].to(self.device))[0] for x in s]
        return video, audio, [self._fit_text(c).to(self.device) for c in text]

    def _flops(self, video, audio) -> float:
        fv, fa = self.flops
        total = 0.0
        for i, a in enumerate(audio):
            la = a.shape[0]
            if video is not None:
                v = video[i]
                lv = v.shape[1] * (v.shape[2] // 2) * (v.shape[3] // 2)
                total += fv.train_flops(lv, la) + fa.train_flops(la, lv)
            else:
                total += fa.train_flops(la, 0)
        return total

    def micro_step(self, batch: Batch) -> dict[str, float]:
        video, audio, text = self._latents(batch)
        nb = self.objective.prepare(video, audio, text, self.dtype)
        if self.fusion:
            v_out, a_out = self.engine(
                video=nb.video_in,
                audio=nb.audio_in,
                t=nb.t,
                video_context=nb.video_context,
                audio_context=nb.audio_context,
                first_frame_is_clean=nb.first_frame_is_clean,
            )
            loss_v = mse(v_out, nb.video_target, skip_first_frame=nb.first_frame_is_clean)
        else:
            a_out = self.engine(x=nb.audio_in, t=nb.t, context=nb.audio_context)
            loss_v = None
        loss_a = mse(a_out, nb.audio_target)
        loss = combine_losses(self.cfg.objective, loss_v, loss_a)
        self.engine.backward(loss)
        self.engine.step()
        tokens = sum(a.shape[0] for a in audio)
        if video is not None:
            tokens += sum(v.shape[1] * (v.shape[2] // 2) * (v.shape[3] // 2) for v in video)
        return {
            "loss": float(loss.detach()),
            "loss_video": float(loss_v.detach()) if loss_v is not None else 0.0,
            "loss_audio": float(loss_a.detach()),
            "tokens": float(tokens),
            "samples": float(len(audio)),
            "flops": self._flops(video, audio),
        }

    # -- loop ---------------------------------------------------------------------------------
    def _reduce(self, sums: dict[str, float]) -> dict[str, float]:
        keys = sorted(sums)
        t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist()))

    def save(self) -> Path:
        state = TrainerState.capture(self.step, self.data_state, self.objective_rng)
        before_commit = None
        if self.cfg.debug.kill_in_save_at_step == self.step and self.rank == 0:
            before_commit = lambda: _kill_self(f"while saving step {self.step}")  # noqa: E731
        meta = {"stage": self.cfg.stage, "model": self.cfg.model}
        path = self.checkpointer.save(self.engine, state, meta, before_commit)
        self.log0("saved checkpoint %s", path)
        return path

    def run(self) -> Optional[Path]:
        cfg = self.cfg
        accum = cfg.engine.gradient_accumulation_steps
        self.log0(
            "training steps %d..%d, global batch %d (%d per rank x %d accumulation x %d ranks)",
            self.step + 1, cfg.max_steps, cfg.data.batch_size * accum * self.world, cfg.data.batch_size, accum,
            self.world,
        )
        sums: dict[str, float] = {}
        window_steps, t0 = 0, time.perf_counter()
        while self.step < cfg.max_steps:
            lr = self.engine.get_lr()[0]  # the rate this step uses (the schedule advances in engine.step)
            for _ in range(accum):
                batch = next(self.batches)
                for k, v in self.micro_step(batch).items():
                    sums[k] = sums.get(k, 0.0) + v
                self.data_state = batch.state
            self.step += 1
            window_steps += 1
            if self.step % cfg.logging.every_steps == 0 or self.step == cfg.max_steps:
                self._log(sums, window_steps, time.perf_counter() - t0, lr)
                sums, window_steps, t0 = {}, 0, time.perf_counter()
            if self.step % cfg.checkpoint.every_steps == 0 or self.step == cfg.max_steps:
                self.save()
                t0 = time.perf_counter()  # saving time is not training throughput
        dist.barrier()
        if self.sink is not None:
            self.sink.close()
        export = None
        # After the last collective: other ranks may exit while rank 0 consolidates (minutes at 11B).
        if cfg.checkpoint.export_on_finish and self.rank == 0:
            export = Path(cfg.run_dir) / "export" / f"{cfg.stage}.safetensors"
            export_checkpoint(latest_checkpoint(cfg.checkpoint_dir), export, DTYPES[cfg.checkpoint.export_dtype])
        return export

    def _log(self, sums: dict[str, float], steps: int, seconds: float, lr: float) -> None:
        g = self._reduce(sums)
        micro = steps * self.cfg.engine.gradient_accumulation_steps * self.world
        values = {
            "loss": g["loss"] / micro,
            "loss_audio": g["loss_audio"] / micro,
            "lr": lr,
            "grad_norm": float(self.engine.get_global_grad_norm() or 0.0),
            "samples_per_s": g["samples"] / seconds,
            "tokens_per_s": g["tokens"] / seconds,
            "step_time_s": seconds / steps,
            "tflops_per_device": g["flops"] / seconds / self.world / 1e12,
        }
        if self.fusion:
            values["loss_video"] = g["loss_video"] / micro
        if self.peak_tflops:
            values["mfu"] = values["tflops_per_device"] / self.peak_tflops
        if self.sink is not None:
            self.sink.log(self.step, values)
            shown = " ".join(f"{k} {v:.4g}" for k, v in values.items())
            log.info("step %d/%d %s", self.step, self.cfg.max_steps, shown)


def train(cfg: TrainConfig) -> Optional[Path]:
    """Run (or resume) a training run; returns the export path on rank 0 when one is written."""
    return Trainer(cfg).run()

