"""The training loop shared by all stages: data -> (encoders) -> flow-matching objective -> DeepSpeed step,
with logging, atomic checkpoints, exact resume and a final export."""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict
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
from ovi.parallel.groups import leave_process_group
from train.checkpoint import Checkpointer, TrainerState, latest_checkpoint, needs_universal, rank_slots
from train.config import TrainConfig
from train.data.latents import load_null_prompt
from train.data.loader import Batch, BatchStream
from train.ema import Ema, ema_file
from ovi.lora import AdapterInfo, base_name, file_fingerprint, inject_lora
from train.encoders import Encoders, build_encoders
from train.engine import build_engine, deepspeed_config, init_distributed, zero_stage
from train.evaluation import InLoopEvaluator
from train.export import DTYPES, export_checkpoint
from train.metrics import MetricsSink, detect_peak_tflops
from train.model_init import build_model, init_plans, meta_model, module_shapes
from train.objective import FlowMatchingObjective
from train.params import apply_trainable
from train.preflight import Preflight, preflight
from train.run_lock import RunLock, exit_with_launcher, launched_by_a_launcher
from train.strategies import strategy_for
from ovi.parallel.groups import sequence_parallel_layout
from ovi.parallel.ulysses import apply_sequence_parallel

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
        if launched_by_a_launcher():
            exit_with_launcher()  # a killed torchrun/deepspeed launcher must not leave this worker training
        self.dist = init_distributed(cfg.engine.dist_backend, cfg.engine.cpu_shm_comm)
        self.rank, self.world, self.device = self.dist.rank, self.dist.world_size, self.dist.device
        # SP groups of engine.sp_size consecutive ranks; data slots, seeds and throughput go by SP group.
        self.layout = sequence_parallel_layout(cfg.engine.sp_size)
        if self.layout.sp_size > 1 and cfg.evaluation.enabled:
            raise ValueError("evaluation runs on rank 0 alone, which an SP-split model cannot; set "
                             "evaluation.enabled=false with engine.sp_size > 1")
        self.lock = RunLock(cfg.run_dir, cfg.checkpoint.lock_stale_s) if self.rank == 0 else None
        checked = preflight(cfg, self.rank, self.world, self.lock)  # seconds; raises naming every problem
        self.model_cfg = load_fusion_config(cfg.model)
        self._set_slots(checked)

        resume = checked.resume_from
        ds_config = deepspeed_config(cfg, self.world, load_universal=resume is not None and needs_universal(
            resume, self.world))
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        model = build_model(cfg, self.model_cfg, ds_config)
        self.lora_modules: list[str] = []
        if cfg.lora.rank:  # adapters over the loaded weights; the same initial adapter on every rank
            torch.manual_seed(derived_seed(cfg.seed, 0, "lora"))
            self.lora_modules = inject_lora(model, cfg.lora)
        counts = apply_trainable(model, cfg.trainable, cfg.frozen)
        apply_sequence_parallel(model, self.layout)  # before DeepSpeed wraps it: the hooks live on the towers
        self.log0("stage %s, %d rank(s), model %s\n%s", cfg.stage, self.world, cfg.model, counts.summary())
        self.frozen_sources = self._frozen_sources(model) if not cfg.checkpoint.save_frozen else {}
        self.strategy = strategy_for(cfg, model)
        self.flop_counters = self.strategy.flop_counters()
        self.engine = build_engine(model, cfg, self.dist, ds_config)
        # DeepSpeed keeps the pre-clip gradient norm only where its ZeRO or bf16 optimizer clips; under ZeRO-0 in
        # fp32 it clips through torch and drops the norm (the log read 0), so the trainer measures it there.
        self.measure_grad_norm = zero_stage(ds_config) == 0 and cfg.engine.precision == "fp32"
        self.grad_norm = 0.0
        self.ema = Ema(model, cfg.ema.decay, self.rank, self.world) if cfg.ema.decay else None
        self.dtype = torch.bfloat16 if cfg.engine.precision == "bf16" else torch.float32
        torch.manual_seed(derived_seed(cfg.seed, self.layout.dp_rank, "torch"))  # one stream per SP group

        self.text_len = min(self.model_cfg.audio.text_len, self.model_cfg.video.text_len)
        self.encoders: Optional[Encoders] = None
        if cfg.data.source == "raw":
            self.encoders = build_encoders(cfg.encoders, self.strategy.has_video, self.device)
            null = self.encoders.text.encode([cfg.objective.null_prompt])[0]
        else:
            null = load_null_prompt(cfg.data.shards[0], cfg.objective.null_prompt)
        # One objective RNG per data slot (see train/checkpoint.py), so the noise follows the data on resize.
        self.objective_rngs = {
            s: torch.Generator().manual_seed(derived_seed(cfg.seed, s, "objective")) for s in self.slots
        }
        self.objective = FlowMatchingObjective(
            cfg.objective, self._fit_text(null).to(self.device), self.objective_rngs[self.slots[0]]
        )

        self.checkpointer = Checkpointer(cfg.checkpoint_dir, self.rank, self.world, cfg.checkpoint.keep_last,
                                         cfg.checkpoint.save_frozen)
        self.step = 0
        self.data_states: dict[int, Optional[dict]] = {s: None for s in self.slots}
        if cfg.checkpoint.resume:
            self.checkpointer.clean_partial()
            if resume is not None:
                state = self.checkpointer.load(self.engine, resume, self.slots)
                state.restore_rng(self.objective_rngs)
                if self.ema is not None:
                    self.ema.load(resume)
                self.step = state.step
                self.data_states = {s: state.slots[s].data_state for s in self.slots}
                self.log0("resumed from %s at step %d (written by %d rank(s), now %d)", resume, self.step,
                          checked.resume_meta["world_size"], self.world)
        # Slot s reads the stream a rank-s run with no accumulation reads: the seeds are per slot.
        self.streams = {s: BatchStream(cfg, s, self.data_states[s]) for s in self.slots}
        self.batches = {s: iter(b) for s, b in self.streams.items()}
        self.nonfinite_steps = 0
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
        self.evaluator = InLoopEvaluator(self)  # does nothing unless cfg.evaluation.enabled

    def _frozen_sources(self, model: torch.nn.Module) -> dict[str, list[str]]:
        """Frozen name -> [init file, key]: what resume and export read back when checkpoints leave them out."""
        plan = init_plans(self.cfg, module_shapes(meta_model(self.cfg, self.model_cfg)))
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        fresh = [n for n in frozen if base_name(n) not in plan]  # LoRA: 'q.base_layer.weight' is q.weight
        if fresh:
            raise ValueError(f"checkpoint.save_frozen=false, but frozen {fresh[0]} (and {len(fresh) - 1} more) come "
                             "from no init file; set checkpoint.save_frozen=true")
        return {n: [str(plan[base_name(n)][0]), plan[base_name(n)][1]] for n in frozen}

    def _set_slots(self, checked: Preflight) -> None:
        """This rank's data slots; on another world size the accumulation keeps the global batch (slots)."""
        accum = self.cfg.engine.gradient_accumulation_steps
        groups = self.layout.dp_size  # an SP group reads one slot stream: its ranks see the same samples
        slots = checked.resume_meta["slots"] if checked.resume_meta else groups * accum
        if slots // groups != accum:
            self.log0("engine.gradient_accumulation_steps %d -> %d: the run has %d micro-batches per step and now "
                      "%d data-parallel group(s)", accum, slots // groups, slots, groups)
            self.cfg.engine.gradient_accumulation_steps = accum = slots // groups
        self.num_slots = slots
        self.slots = rank_slots(self.layout.dp_rank, accum)

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
        has_video = self.strategy.has_video
        if self.encoders is None:
            video = [x.video.to(self.device) for x in s] if has_video else None
            audio = [x.audio.to(self.device) for x in s]
            text = [x.text.to(self.device) for x in s]
        else:
            with torch.no_grad():
                text = self.encoders.text.encode([x.caption for x in s])
                audio = [self.encoders.audio.encode(x.audio[None].to(self.device))[0].T for x in s]  # [L, 20]
                video = None
                if has_video:
                    video = [self.encoders.video.encode(x.video[None].to(self.device))[0] for x in s]
        return video, audio, [self._fit_text(c).to(self.device) for c in text]

    def micro_step(self, batch: Batch, slot: Optional[int] = None) -> dict[str, float]:
        video, audio, text = self._latents(batch)
        self.objective.generator = self.objective_rngs[self.slots[0] if slot is None else slot]
        nb = self.objective.prepare(video, audio, text, self.dtype, batch.audio_mask())  # padding: no loss
        streams = self.strategy.streams(nb)
        out = self.strategy.loss(nb, streams, self.strategy.forward(self.engine, streams))
        self.engine.backward(out.loss)
        if self.measure_grad_norm and self.engine.is_gradient_accumulation_boundary():
            # After backward's all-reduce at the boundary: the summed, averaged gradients every rank holds.
            grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
            self.grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
        self.engine.step()
        tokens = self.strategy.tokens(nb)
        loss = float(out.loss.detach())
        finite = math.isfinite(loss)
        share = 1.0 / self.layout.sp_size  # the SP group's ranks hold one sample: count it once over the group
        return {
            "loss": loss if finite else 0.0,  # counted below instead of turning the logged mean into NaN
            "nonfinite": 0.0 if finite else 1.0,
            **{k: float(v) for k, v in out.parts.items()},
            "tokens": share * float(sum(sum(n) for n in tokens.values())),
            "samples": share * float(len(audio)),
            "flops": share * self.strategy.flops(tokens, self.flop_counters),
        }

    # -- loop ---------------------------------------------------------------------------------
    def _reduce(self, sums: dict[str, float]) -> dict[str, float]:
        keys = sorted(sums)
        t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist()))

    def save(self) -> Path:
        # An SP group's ranks share their slots: the leader alone writes them.
        slots = {s: (self.data_states[s], self.objective_rngs[s]) for s in self.slots} if self.layout.is_leader else {}
        state = TrainerState.capture(self.step, slots)
        before_commit = None
        if self.cfg.debug.kill_in_save_at_step == self.step and self.rank == 0:
            before_commit = lambda: _kill_self(f"while saving step {self.step}")  # noqa: E731
        meta = {"model": self.cfg.model, "slots": self.num_slots, "precision": self.cfg.engine.precision,
                "frozen_sources": self.frozen_sources,
                **asdict(self.strategy.checkpoint_metadata()), **self._finetuning_meta()}
        extra = {ema_file(self.rank): self.ema.state()} if self.ema is not None else None
        return self.checkpointer.save(self.engine, state, meta, before_commit, extra)  # logs its time and size

    def _finetuning_meta(self) -> dict:
        """LoRA adapter facts (the export writes the adapter alone with them) and whether an EMA is saved."""
        meta: dict = {"ema": self.ema is not None}
        if self.lora_modules:
            base = self.cfg.init.fusion or self.cfg.init.audio_tower or ""
            meta["lora"] = asdict(AdapterInfo(self.cfg.lora.rank, self.cfg.lora.alpha, list(self.cfg.lora.targets),
                                              self.lora_modules, Path(base).stem if base else "",
                                              file_fingerprint(base) if Path(base).is_file() else ""))
        return meta

    def run(self) -> Optional[Path]:
        cfg = self.cfg
        accum = cfg.engine.gradient_accumulation_steps
        self.log0(
            "training steps %d..%d, global batch %d (%d per group x %d accumulation x %d data-parallel groups of "
            "%d rank(s))", self.step + 1, cfg.max_steps, cfg.data.batch_size * accum * self.layout.dp_size,
            cfg.data.batch_size, accum, self.layout.dp_size, self.layout.sp_size,
        )
        sums: dict[str, float] = {}
        window_steps, t0 = 0, time.perf_counter()
        while self.step < cfg.max_steps:
            lr = self.engine.get_lr()[0]  # the rate this step uses (the schedule advances in engine.step)
            for slot in self.slots:
                batch = next(self.batches[slot])
                for k, v in self.micro_step(batch, slot).items():
                    sums[k] = sums.get(k, 0.0) + v
                self.data_states[slot] = batch.state
            self.step += 1
            if self.ema is not None:
                self.ema.update()
            if self.lock is not None:
                self.lock.touch()
            window_steps += 1
            if self.step % cfg.logging.every_steps == 0 or self.step == cfg.max_steps:
                self._log(sums, window_steps, time.perf_counter() - t0, lr)
                sums, window_steps, t0 = {}, 0, time.perf_counter()
            if self.step % cfg.checkpoint.every_steps == 0 or self.step == cfg.max_steps:
                self.save()
                t0 = time.perf_counter()  # saving time is not training throughput
            if self.evaluator.due(self.step):
                self.evaluator.run(self.step)
                t0 = time.perf_counter()  # nor is evaluation time
        dist.barrier()
        if self.sink is not None:
            self.sink.close()
        export = None
        # After the last collective: other ranks may exit while rank 0 consolidates (minutes at 11B).
        if cfg.checkpoint.export_on_finish and self.rank == 0:
            export = Path(cfg.run_dir) / "export" / f"{cfg.stage}.safetensors"
            export_checkpoint(latest_checkpoint(cfg.checkpoint_dir), export, DTYPES[cfg.checkpoint.export_dtype],
                              use_ema=cfg.ema.export)
        return export

    def _log(self, sums: dict[str, float], steps: int, seconds: float, lr: float) -> None:
        # Totals since the run started (the data counts survive resumes: they are part of the data position).
        sums = {**sums, "data_bad_samples": float(sum(b.bad_samples for b in self.streams.values())),
                "data_bad_shards": float(sum(b.bad_shards for b in self.streams.values()))}
        g = self._reduce(sums)
        self.nonfinite_steps += int(g.get("nonfinite", 0.0))
        skipped = int(getattr(self.engine, "skipped_steps", 0) or 0)
        micro = steps * self.cfg.engine.gradient_accumulation_steps * self.world
        values = {
            "loss": g["loss"] / micro,
            "lr": lr,
            "grad_norm": self.grad_norm if self.measure_grad_norm else float(self.engine.get_global_grad_norm() or 0),
            "samples_per_s": g["samples"] / seconds,
            "tokens_per_s": g["tokens"] / seconds,
            "step_time_s": seconds / steps,
            "tflops_per_device": g["flops"] / seconds / self.world / 1e12,
        }
        values.update({k: g[k] / micro for k in g if k.startswith("loss_")})
        values.update(nonfinite_losses=float(self.nonfinite_steps), skipped_steps=float(skipped),
                      data_bad_samples=g["data_bad_samples"], data_bad_shards=g["data_bad_shards"])
        values.update(self.checkpointer.last_save)  # the latest save's seconds and size
        if self.peak_tflops:
            values["mfu"] = values["tflops_per_device"] / self.peak_tflops
        if self.sink is not None:
            self.sink.log(self.step, values)
            shown = " ".join(f"{k} {v:.4g}" for k, v in values.items())
            log.info("step %d/%d %s", self.step, self.cfg.max_steps, shown)
        if g.get("nonfinite", 0.0):
            self.log0("%d micro-batch(es) with a non-finite loss in the last %d step(s); %d so far, %d optimizer "
                      "step(s) skipped by DeepSpeed", int(g["nonfinite"]), steps, self.nonfinite_steps, skipped)
        if self.nonfinite_steps > self.cfg.engine.max_nonfinite_steps:
            raise FloatingPointError(
                f"{self.nonfinite_steps} non-finite losses, over engine.max_nonfinite_steps="
                f"{self.cfg.engine.max_nonfinite_steps}: lower optim.lr or check the data; the last intact "
                "checkpoint resumes the run"
            )


def train(cfg: TrainConfig) -> Optional[Path]:
    """Run (or resume) a training run; returns the export path on rank 0 when one is written."""
    trainer = Trainer(cfg)
    try:
        export = trainer.run()
    finally:
        if trainer.lock is not None:
            trainer.lock.release()
    # No barrier: the other ranks leave while rank 0 exports.
    leave_process_group(sync=False)
    return export

