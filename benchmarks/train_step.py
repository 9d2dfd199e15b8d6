"""Fusion training-step time, tokens/s and FLOP rate on this machine, through the trainer's own pieces.

One fusion micro-batch per step (paper recipe: FFNs frozen, attention trained; loss 0.85/0.15), batch 1:
video latent [48, 5, 16, 16] (320 tokens), audio latent [157, 20] (5.04 s), 100 text tokens (the tiny config's
text_len, 32, caps it). For each model config (tiny, mid) it times, in the same run:

- ``trainer``: ``Trainer.micro_step``'s path: objective -> DeepSpeed engine (ZeRO-2, one process) -> step;
- ``baseline``: the same model, objective and a plain ``torch.optim.AdamW`` loop without DeepSpeed, so the
  difference is the engine's overhead;
- the FLOP estimate the trainer logs (train/metrics.py) next to torch's FlopCounterMode count of the same step
  (FlopCounterMode does not count CPU SDPA attention, so it matches the estimate's weight part).

    python benchmarks/train_step.py [--configs tiny mid] [--steps 5] [--precision fp32] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ovi.config import load_fusion_config  # noqa: E402
from ovi.models.fusion import FusionModel  # noqa: E402
from train.config import load_train_config  # noqa: E402
from train.engine import build_engine, init_distributed  # noqa: E402
from train.metrics import tower_flops  # noqa: E402
from train.objective import FlowMatchingObjective  # noqa: E402
from train.params import apply_trainable  # noqa: E402
from train.strategies import FusionStage  # noqa: E402

VIDEO_SHAPE, AUDIO_SHAPE, TEXT_TOKENS = (48, 5, 16, 16), (157, 20), 100
VIDEO_TOKENS = VIDEO_SHAPE[1] * (VIDEO_SHAPE[2] // 2) * (VIDEO_SHAPE[3] // 2)


def make_step(model, strategy, objective, backward, step, text_len, dtype):
    g = torch.Generator().manual_seed(0)
    video, audio = [torch.randn(VIDEO_SHAPE, generator=g)], [torch.randn(AUDIO_SHAPE, generator=g)]
    text = [torch.randn(min(TEXT_TOKENS, text_len), 4096, generator=g) * 0.1]

    def run() -> float:
        nb = objective.prepare(video, audio, text, dtype)
        streams = strategy.streams(nb)
        out = strategy.loss(nb, streams, strategy.forward(model, streams))
        backward(out.loss)
        step()
        return float(out.loss.detach())

    return run


def timed(fn, steps: int) -> list[float]:
    fn()  # warm-up (allocations, first-call paths)
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench(config: str, steps: int, precision: str, dist_info) -> None:
    cfg = load_train_config(REPO / "configs/train/fusion.yaml", [
        f"model={REPO / 'configs/model' / (config + '.yaml')}", f"engine.precision={precision}",
        "engine.deepspeed_config=" + str(REPO / "configs/train/deepspeed/zero2.json"), "max_steps=1000",
        "optim.warmup_steps=0", "engine.activation_checkpointing=false",
    ])
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    mcfg = load_fusion_config(cfg.model)
    null = torch.zeros(1, 4096)
    results = {}
    for kind in ("baseline", "trainer"):
        torch.manual_seed(0)
        model = FusionModel(mcfg).to(dtype)
        apply_trainable(model, cfg.trainable, cfg.frozen)
        strategy = FusionStage(cfg, model)
        objective = FlowMatchingObjective(cfg.objective, null, torch.Generator().manual_seed(0))
        if kind == "trainer":
            engine = build_engine(model, cfg, dist_info)
            fn = make_step(engine, strategy, objective, engine.backward, engine.step, mcfg.video.text_len, dtype)
            fv, fa = tower_flops(model.video_model, mcfg.video), tower_flops(model.audio_model, mcfg.audio)
            flops_est = fv.train_flops(VIDEO_TOKENS, AUDIO_SHAPE[0]) + fa.train_flops(AUDIO_SHAPE[0], VIDEO_TOKENS)
            linear_est = fv.linear_flops(VIDEO_TOKENS, AUDIO_SHAPE[0]) + fa.linear_flops(AUDIO_SHAPE[0], VIDEO_TOKENS)
        else:
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr)

            def step(model=model, opt=opt) -> None:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)

            fn = make_step(model, strategy, objective, lambda loss: loss.backward(), step, mcfg.video.text_len, dtype)
            with FlopCounterMode(display=False) as counter:
                fn()
            flops_counted = counter.get_total_flops()
        results[kind] = timed(fn, steps)
    tokens = VIDEO_TOKENS + AUDIO_SHAPE[0]
    print(f"\n{config} ({precision}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
          f"{tokens} latent tokens/step, {steps} steps, {torch.get_num_threads()} threads)")
    for kind, times in results.items():
        med = statistics.median(times)
        print(f"  {kind:<9} step {med * 1e3:8.1f} ms (min {min(times) * 1e3:.1f})  {tokens / med:8.1f} tokens/s  "
              f"{flops_est / med / 1e9:7.2f} GFLOP/s")
    overhead = statistics.median(results["trainer"]) / statistics.median(results["baseline"]) - 1
    print(f"  DeepSpeed engine overhead vs plain AdamW loop: {100 * overhead:+.0f}%")
    print(f"  FLOPs/step: trainer estimate {flops_est / 1e9:.2f} G (weights {linear_est / 1e9:.2f} G + attention); "
          f"FlopCounterMode, which skips CPU attention: {flops_counted / 1e9:.2f} G")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["tiny", "mid"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    dist_info = init_distributed("auto")
    for config in a.configs:
        bench(config, a.steps, a.precision, dist_info)


if __name__ == "__main__":
    main()
