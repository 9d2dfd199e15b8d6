"""Evaluation inside training: every ``evaluation.every_steps`` steps, on rank 0,

1. a held-out loss: fixed validation samples (the first ``validation_samples`` of ``validation_shards``)
   noised at fixed sigmas with fixed noise, so the figure moves only when the weights do;
2. samples: the fixed prompts generated with the current weights through the inference pipeline of
   ``evaluation.inference`` (its codecs, text encoder and sampler settings), written as mp4 + JSON sidecar
   under ``{run_dir}/eval/step_{N}/``, scored with ``ovi-eval``'s metrics and logged (``eval/*`` scalars,
   the first frame and the audio of each clip to TensorBoard).

Off by default. Rank 0 forwards the bare module alone, so this needs every parameter on rank 0 (DDP or
ZeRO-1/2; not ZeRO-3). The weights evaluated are the ones being trained.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ovi.fileio import atomic_write_text
from ovi.media import write_mp4
from train.objective import NoisedBatch, add_noise
from ovi.flow import FLOW

if TYPE_CHECKING:
    from train.trainer import Trainer

log = logging.getLogger(__name__)
VALIDATION_SEED = 1234  # the held-out noise; fixed so the loss compares across steps and runs


def clip_name(index: int, prompt: str, seed: int) -> str:
    """ovi-generate's naming (NNN_<slug>_seed<k>), so ovi-eval reads these folders like its outputs."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", prompt)[:40].strip("_") or "sample"
    return f"{index:03d}_{slug}_seed{seed}"


class InLoopEvaluator:
    def __init__(self, trainer: Trainer) -> None:
        self.t = trainer
        self.cfg = trainer.cfg.evaluation
        self._pipeline = None
        self._val_batches: list | None = None

    def due(self, step: int) -> bool:
        return self.cfg.enabled and self.t.rank == 0 and step % self.cfg.every_steps == 0

    @property
    def module(self) -> torch.nn.Module:
        return getattr(self.t.engine, "module", self.t.engine)

    def run(self, step: int) -> dict[str, float]:
        was_training = self.module.training
        self.module.eval()
        try:
            values = self.held_out_loss() if self.cfg.validation_shards else {}
            if self.cfg.prompts and self.cfg.inference and self.t.strategy.has_video:  # sampling needs both towers
                values.update(self.sample_and_score(step))
        finally:
            self.module.train(was_training)
        if self.t.sink is not None and values:
            self.t.sink.log(step, values)
        log.info("eval step %d %s", step, " ".join(f"{k} {v:.4g}" for k, v in values.items()))
        return values

    # -- held-out loss --------------------------------------------------------------------------
    def _validation(self) -> list:
        if self._val_batches is None:
            from train.data.loader import BatchStream

            cfg = self.t.cfg
            val_cfg = replace(cfg, data=replace(cfg.data, shards=list(self.cfg.validation_shards)))
            stream = iter(BatchStream(val_cfg, 0, None))
            batches, n = [], 0
            while n < self.cfg.validation_samples:
                batch = next(stream)
                batches.append((*self.t._latents(batch), batch.audio_mask()))
                n += len(batch.samples)
            self._val_batches = batches
        return self._val_batches

    @torch.no_grad()
    def held_out_loss(self) -> dict[str, float]:
        strategy, out = self.t.strategy, {}
        for sigma in self.cfg.validation_sigmas:
            gen = torch.Generator().manual_seed(VALIDATION_SEED)
            total = 0.0
            for video, audio, text, audio_mask in self._validation():
                nb = self._noised(video, audio, text, float(sigma), gen, audio_mask)
                streams = strategy.streams(nb)
                total += float(strategy.loss(nb, streams, strategy.forward(self.module, streams)).loss)
            out[f"eval/val_loss_sigma{sigma:g}"] = total / len(self._validation())
        out["eval/val_loss"] = sum(out.values()) / len(out)
        return out

    def _noised(self, video, audio, text, sigma: float, gen: torch.Generator, audio_mask=None) -> NoisedBatch:
        """Like the objective's batch, at one sigma, no condition dropout, no clean first frame."""
        dtype = self.t.dtype
        v = [add_noise(x, sigma, gen) for x in video] if video is not None else None
        a = [add_noise(x, sigma, gen) for x in audio] if audio is not None else None
        s = torch.full((len(text),), sigma)
        device = text[0].device
        return NoisedBatch(t=FLOW.timestep(s).to(device), sigma=s,
                           video_in=[x.to(dtype) for x, _ in v] if v else None, video_target=[y for _, y in v] if v else None,
                           audio_in=[x.to(dtype) for x, _ in a] if a else None, audio_target=[y for _, y in a] if a else None,
                           video_context=[c.to(dtype) for c in text], audio_context=[c.to(dtype) for c in text],
                           audio_mask=None if audio_mask is None else audio_mask.to(device))

    # -- samples --------------------------------------------------------------------------------
    def pipeline(self):
        if self._pipeline is None:
            from ovi.components import Components, load_codecs, random_components
            from ovi.config import InferenceConfig, load_config
            from ovi.pipeline import OviPipeline

            inf = load_config(InferenceConfig, self.cfg.inference, self.cfg.inference_overrides)
            dtype = "bfloat16" if self.t.dtype == torch.bfloat16 else "float32"
            # Run where and as the training model runs; no offload, no weight conversions of the live model, and
            # its own joint pass with its own weights: a preset's V2A weights belong to another run (and need not
            # exist yet: a rebuild evaluates stage 2 before stage 3 writes them).
            wanted = {"device": self.t.device.type, "dtype": dtype, "cpu_offload": False, "fp8": False,
                      "quantize": "none", "offload_blocks": 0, "compile": False, "audio_from_video": False}
            inf = replace(inf, **{k: v for k, v in wanted.items() if hasattr(inf, k)})
            inf = replace(inf, checkpoints=replace(inf.checkpoints, v2a=""))
            if inf.random_weights:
                base = random_components(self.t.model_cfg, seed=inf.seed)
                codecs = (base.text_encoder, base.video_vae, base.audio_codec)
            else:  # the inference config's codecs and text encoder; its fusion file is not read
                codecs = load_codecs(inf, self.t.model_cfg, self.t.dtype)
            # ... and the weights being trained.
            components = Components(self.module, *codecs)
            self._pipeline = OviPipeline(components, inf)
        return self._pipeline

    def sample_and_score(self, step: int) -> dict[str, float]:
        from ovi.eval import evaluate
        from ovi.eval.report import write

        folder = Path(self.t.cfg.run_dir) / "eval" / f"step_{step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        pipe = self.pipeline()
        for i, prompt in enumerate(self.cfg.prompts):
            g = pipe.generate(prompt, seed=self.cfg.seed, progress=False)
            stem = folder / clip_name(i, prompt, g.seed)
            write_mp4(stem.with_suffix(".mp4"), g.video, g.audio, fps=g.fps, sample_rate=g.sample_rate)
            atomic_write_text(stem.with_suffix(".json"), json.dumps({"prompt": prompt, "seed": g.seed, "step": step}))
            tb = getattr(self.t.sink, "tb", None)
            if tb is not None:
                tb.add_image(f"eval/{i:03d}/first_frame", (g.video[:, 0] + 1) / 2, step)
                tb.add_audio(f"eval/{i:03d}/audio", g.audio[None], step, sample_rate=g.sample_rate)
        report = evaluate(folder, list(self.cfg.metrics), dict(self.cfg.weights))
        write(report, folder / "metrics")
        for name, why in report.errors.items():
            log.warning("eval metric %s did not run: %s", name, why)
        return {f"eval/{k}": float(v) for k, v in report.aggregate.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "clips"}
