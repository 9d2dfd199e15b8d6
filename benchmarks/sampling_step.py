"""Sampling step time and memory per tier: the naive path (the reference's arithmetic) against this repo's.

    python benchmarks/sampling_step.py [--threads 1] [--device cpu] [--skip-tiers] [--skip-cache]

1. Per-step time, same process, rounds alternating between the paths, same weights and noise:
   naive      two unbatched forwards per step (positive; negative with the SLG block skipped), each
              recomputing the text MLP over text_len tokens, every block's text K/V and the float64 RoPE
              tables: what the reference computes;
   optimized  ovi.denoise defaults: both branches in one batched forward, text K/V and RoPE once per
              generation, shared latents embedded once, block 0's text-free work once for both rows
              (exact: final latents' rel_l2 printed);
   unbatched  the low-memory switch (SpeedConfig(batch_cfg=False)): one branch at a time, caches kept;
   compiled   optimized on a copy of the model whose blocks are torch.compile'd (ovi-generate compile=true;
              compiled in the warm-up, not timed; --no-compile skips it).
   Configs: "mid" (dim 512, 8 heads, 4 layers; video [48,5,16,16] = 320 tokens, audio [40,20]) and "long"
   (head_dim 128 as the release, 2048 video tokens, 157 audio tokens, 512 text tokens; 2 layers of dim 256).
2. Step caching (ovi.models.cache) at several thresholds on the mid config: time per step, steps reused,
   final-latent rel_l2 against the uncached run.
3. Memory tiers (one subprocess each, bf16, mid config): peak memory (CUDA: max allocated; CPU: peak RSS
   growth after model build) and the final latents' rel_l2 against the plain bf16 run.
Random weights (heads re-drawn so outputs are not zero); UniPC, CFG 4/3, SLG layer 1, shift 5.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ovi.config import FusionConfig, TowerConfig, load_fusion_config  # noqa: E402
from ovi.denoise import Conditioning, GuidanceConfig, SpeedConfig, guided_velocity, sample  # noqa: E402
from ovi.models.compile import compile_blocks  # noqa: E402
from ovi.models.fusion import FusionModel  # noqa: E402
from ovi.models.stream import Stream  # noqa: E402
from ovi.sampling import guidance  # noqa: E402

TIERS = ("bf16", "fp8", "fp8_scaled", "int8", "blocks1", "unbatched", "step_cache0.1")


@dataclass
class Case:
    name: str
    model: FusionConfig
    video: tuple[int, ...]
    audio: tuple[int, int]
    prompt_tokens: int = 100


def cases() -> dict[str, Case]:
    def tower(modality: str, in_dim: int, patch: list[int], scale: float = 1.0) -> TowerConfig:
        return TowerConfig(modality=modality, in_dim=in_dim, out_dim=in_dim, patch_size=patch, dim=256, ffn_dim=1024,
                           num_heads=2, num_layers=2, rope_temporal_scale=scale)
    long = FusionConfig(video=tower("video", 48, [1, 2, 2]), audio=tower("audio", 20, [1], 0.19676))
    return {
        "mid": Case("mid", load_fusion_config(REPO / "configs/model/mid.yaml"), (48, 5, 16, 16), (40, 20)),
        "long": Case("long", long, (48, 8, 32, 32), (157, 20)),
    }


def build(case: Case, dtype: torch.dtype, device: str) -> tuple[FusionModel, Conditioning, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = FusionModel(case.model).eval()
    for tower in (model.video_model, model.audio_model):
        torch.nn.init.normal_(tower.head.head.weight, std=0.02)  # a fresh model's heads are zero
    g = torch.Generator().manual_seed(1)
    text = Conditioning(*(torch.randn(n, 4096, generator=g) for n in (case.prompt_tokens, 12, 10)))
    text = Conditioning(*(x.to(device, dtype) for x in (text.positive, text.video_negative, text.audio_negative)))
    noise_v, noise_a = torch.randn(case.video, generator=g), torch.randn(case.audio, generator=g)
    return model.to(device, dtype), text, noise_v.to(device, dtype), noise_a.to(device, dtype)


def naive_velocity(model: FusionModel, text: Conditioning, cfg: GuidanceConfig):  # noqa: ANN201
    """The reference's step: two forwards from raw text, nothing kept between them or between steps."""
    def velocity(x_v: torch.Tensor, x_a: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pv, pa = model(Stream([x_v], t, [text.positive]), Stream([x_a], t, [text.positive]))
        nv, na = model(Stream([x_v], t, [text.video_negative]), Stream([x_a], t, [text.audio_negative]),
                       slg_layer=cfg.slg_layer)
        return guidance(pv[0], nv[0], cfg.video_scale), guidance(pa[0], na[0], cfg.audio_scale)
    return velocity


def timed(velocity, times: list[float], sync):  # noqa: ANN001, ANN201
    def wrapped(x_v, x_a, t):  # noqa: ANN001, ANN202
        sync()
        t0 = time.perf_counter()
        out = velocity(x_v, x_a, t)
        sync()
        times.append(time.perf_counter() - t0)
        return out
    return wrapped


def run(model, text, cfg, noise_v, noise_a, velocity, times, sync):  # noqa: ANN001, ANN201
    with torch.inference_mode():
        return sample(timed(velocity, times, sync), noise_v, noise_a, cfg.solver, cfg.num_steps, cfg.shift, progress=False)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def speed_table(case: Case, steps: int, rounds: int, device: str, sync, compiled: bool = True) -> None:  # noqa: ANN001
    model, text, nv, na = build(case, torch.float32, device)
    cfg = GuidanceConfig("unipc", steps, 5.0, 4.0, 3.0, 1)
    paths = {
        "naive": lambda: naive_velocity(model, text, cfg),
        "optimized": lambda: guided_velocity(model, text, cfg),
        "unbatched": lambda: guided_velocity(model, text, cfg, speed=SpeedConfig(batch_cfg=False)),
    }
    if compiled:
        fast = copy.deepcopy(model)
        compile_blocks(fast)
        paths["compiled"] = lambda: guided_velocity(fast, text, cfg)
        run(fast, text, cfg, nv, na, paths["compiled"](), [], sync)  # compiles every block
    times: dict[str, list[float]] = {k: [] for k in paths}
    finals: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    run(model, text, cfg, nv, na, paths["optimized"](), [], sync)  # warm-up
    for _ in range(rounds):
        for name, make in paths.items():
            finals[name] = run(model, text, cfg, nv, na, make(), times[name], sync)
    base = statistics.median(times["naive"])
    for name in paths:
        med = statistics.median(times[name])
        dev = max(rel_l2(finals[name][i], finals["naive"][i]) for i in range(2))
        print(f"| {case.name} | {name} | {med:.3f} | {base / med:.2f}x | {dev:.1e} |")


def cache_table(case: Case, steps: int, thresholds: list[float], device: str, sync) -> None:  # noqa: ANN001
    model, text, nv, na = build(case, torch.float32, device)
    cfg = GuidanceConfig("unipc", steps, 5.0, 4.0, 3.0, 1)
    ref = None
    for th in thresholds:
        times: list[float] = []
        velocity = guided_velocity(model, text, cfg, speed=SpeedConfig(step_cache=th))
        out = run(model, text, cfg, nv, na, velocity, times, sync)
        ref = out if ref is None else ref
        reused = sum(c.reused for c in velocity.caches.values())  # type: ignore[attr-defined]
        dev = max(rel_l2(out[i], ref[i]) for i in range(2))
        print(f"| {th:g} | {statistics.median(times):.3f} | {sum(times):.2f} | {reused}/{steps} | {dev:.1e} |")


def tier_worker(tier: str, device: str, steps: int) -> dict:
    from ovi.models.offload import stream_blocks
    from ovi.models.quant import quantize_model, weight_storage_bytes

    case = cases()["mid"]
    model, text, nv, na = build(case, torch.bfloat16, "cpu")
    speed = SpeedConfig()
    if tier in ("fp8", "fp8_scaled", "int8"):
        quantize_model(model, tier, torch.device(device))
    if tier == "unbatched":
        speed = SpeedConfig(batch_cfg=False)
    if tier.startswith("step_cache"):
        speed = SpeedConfig(step_cache=float(tier.removeprefix("step_cache")))
    if tier.startswith("blocks"):
        stream_blocks(model, device, int(tier.removeprefix("blocks")))
    else:
        model.to(device)
    text = Conditioning(*(x.to(device) for x in (text.positive, text.video_negative, text.audio_negative)))
    nv, na = nv.to(device), na.to(device)
    weights = weight_storage_bytes(model)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    else:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cfg = GuidanceConfig("unipc", steps, 5.0, 4.0, 3.0, 1)
    with torch.inference_mode():
        out = sample(guided_velocity(model, text, cfg, speed=speed), nv, na, "unipc", steps, 5.0, progress=False)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"tier": tier, "linear_weight_mb": weights / 2**20, "peak_mb": peak / 2**20,
            "growth_mb": (peak - start) / 2**20, "video": out[0].float().cpu().tolist(), "audio": out[1].float().cpu().tolist()}


def tier_table(device: str, steps: int, threads: int | None) -> None:
    results = {}
    for tier in TIERS:
        cmd = [sys.executable, __file__, "--tier-worker", tier, "--device", device, "--tier-steps", str(steps)]
        cmd += ["--threads", str(threads)] if threads else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"| {tier} | failed: {proc.stderr.strip().splitlines()[-1]} | | | |")
            continue
        results[tier] = r = json.loads(proc.stdout.strip().splitlines()[-1])
        base = results.get("bf16", r)
        dev = max(rel_l2(torch.tensor(r[k]), torch.tensor(base[k])) for k in ("video", "audio"))
        print(f"| {tier} | {r['linear_weight_mb']:.0f} | {r['peak_mb']:.0f} | {r['growth_mb']:.0f} | {dev:.1e} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-tiers", action="store_true")
    ap.add_argument("--skip-cache", action="store_true")
    ap.add_argument("--only", choices=["mid", "long"], default=None)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile path (compiling takes minutes)")
    ap.add_argument("--tier-worker", help=argparse.SUPPRESS)
    ap.add_argument("--tier-steps", type=int, default=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tier_worker:
        print(json.dumps(tier_worker(args.tier_worker, args.device, args.tier_steps)))
        return
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| config | path | s/step (median) | vs naive | final latents rel_l2 vs naive |\n|---|---|---|---|---|")
    for name, case in cases().items():
        if args.only in (None, name):
            speed_table(case, 4 if name == "mid" else 2, args.rounds if name == "mid" else 1, args.device, sync,
                        not args.no_compile)
    if not args.skip_cache:
        print("\nstep caching, mid config, 20 steps\n")
        print("| threshold | s/step (median) | s total | steps reused | rel_l2 vs uncached |\n|---|---|---|---|---|")
        cache_table(cases()["mid"], 20, [0.0, 0.2, 0.5, 1.0, 2.0], args.device, sync)
    if not args.skip_tiers:
        print("\nmemory tiers, mid config, bfloat16, 4 steps\n")
        print("| tier | linear weights MB | peak MB | growth while sampling MB | rel_l2 vs bf16 |\n|---|---|---|---|---|")
        tier_table(args.device, 4, args.threads)


if __name__ == "__main__":
    main()
