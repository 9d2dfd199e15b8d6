"""Per-GPU memory of LoRA fine-tuning, estimated from the model's own parameter counts (no GPU needed).

    python -m train.lora_memory [--model configs/model/ovi_11b.yaml] [--frames 121] [--size 704] [--gpus 8]

Terms (bytes): the frozen base in bf16 (2/param; ZeRO-3 splits it over the GPUs, ZeRO-2 does not); the adapter
in bf16 + its fp32 master + fp32 gradient + two fp32 Adam moments (2 + 4 + 4 + 8 = 18/param; optimizer offload
moves the 16 bytes of master, gradient reduce buffer and moments to the CPU, leaving 2 + 4); activations: with
activation checkpointing each block keeps its input [tokens, dim] in bf16 and one block's internals are live
at a time; without it every block keeps its internals, taken as 14*dim + 3*ffn_dim bf16 values per token
(the inputs of q/k/v/o, text and cross-modal attention, norms, the FFN's hidden activation and its GELU).
An estimate to plan with: measured peaks add the CUDA context (~0.5 GB) and allocator fragmentation.
"""
from __future__ import annotations

import argparse

from ovi.config import FusionConfig, load_fusion_config
from ovi.geometry import ClipGeometry
from ovi.lora import LoraSpec, target_modules
from ovi.models.fusion import FusionModel

GB = 1e9


def _counts(cfg: FusionConfig, rank: int) -> tuple[int, int]:
    """(base parameters, LoRA parameters at ``rank``) of the default targets, counted on a meta-device model."""
    import torch

    with torch.device("meta"):
        model = FusionModel(cfg, init=False)
    base = sum(p.numel() for p in model.parameters())
    modules = dict(model.named_modules())
    lora = sum(rank * (modules[n].in_features + modules[n].out_features)
               for n in target_modules(model, LoraSpec(rank=rank)))
    return base, lora


def memory_row(cfg: FusionConfig, rank: int, tokens: int, checkpointing: bool, offload: bool, gpus: int,
               zero3: bool) -> dict[str, float]:
    base, lora = _counts(cfg, rank)
    weights = 2 * base / (gpus if zero3 else 1)
    adapter = lora * (6 if offload else 18)
    per_token = 14 * cfg.video.dim + 3 * cfg.video.ffn_dim  # bf16 values per token per block (see module doc)
    layers = cfg.video.num_layers
    one_block = 2 * tokens * per_token
    acts = 2 * tokens * cfg.video.dim * layers + one_block if checkpointing else one_block * layers
    return {"rank": rank, "lora_params_M": lora / 1e6, "weights_GB": weights / GB, "adapter_GB": adapter / GB,
            "activations_GB": acts / GB, "total_GB": (weights + adapter + acts) / GB}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="configs/model/ovi_11b.yaml")
    ap.add_argument("--frames", type=int, default=121)
    ap.add_argument("--size", type=int, default=704, help="square side in pixels (960 for the 960 models)")
    ap.add_argument("--gpus", type=int, default=8)
    args = ap.parse_args(argv)
    cfg = load_fusion_config(args.model)
    geo = ClipGeometry.for_frames(args.frames)
    h, w = geo.latent_hw(args.size, args.size)
    tokens = geo.latent_frames * (h // 2) * (w // 2) + geo.audio_latents  # both towers' tokens, video dominates
    print(f"{args.model}: {args.frames} frames at {args.size}x{args.size} ({tokens} tokens), {args.gpus} GPUs")
    print("| rank | LoRA params | act. ckpt | opt. offload | ZeRO-2 GB/GPU | ZeRO-3 GB/GPU |")
    print("|---|---|---|---|---|---|")
    for rank in (16, 64):
        for ckpt in (True, False):
            for off in (False, True):
                z2 = memory_row(cfg, rank, tokens, ckpt, off, args.gpus, zero3=False)
                z3 = memory_row(cfg, rank, tokens, ckpt, off, args.gpus, zero3=True)
                print(f"| {rank} | {z2['lora_params_M']:.1f} M | {'yes' if ckpt else 'no'} | {'yes' if off else 'no'} "
                      f"| {z2['total_GB']:.1f} | {z3['total_GB']:.1f} |")


if __name__ == "__main__":
    main()
