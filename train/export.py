"""Consolidate a (sharded) training checkpoint into one safetensors file the rest of the project loads.

- fusion: the released Ovi key format (``video_model.blocks.0.self_attn.q.weight`` ...), loadable with
  ``ovi.checkpoints.load_fusion_checkpoint`` and so by the generation pipeline;
- audio stages: a standalone audio tower (``blocks.0.self_attn.q.weight`` ...), what ``init.audio_tower``
  of the next stage takes.

Usage::

    python -m train.export runs/fusion/checkpoints [--tag step_010000] --out ovi_finetuned.safetensors [--dtype bf16]
        [--ema]                      the EMA of the trainable weights instead of the raw ones
        [--only 'audio_model.*']     only the tensors whose names match (glob, repeatable): e.g. a V2A-tuned
                                     audio tower: generation's checkpoints.v2a (ovi.pass_weights)

A LoRA run's export is its adapter alone (``<out stem>_lora.safetensors``, fp32, with its metadata) plus the
base with that adapter merged (``out``); ``python -m ovi.lora merge`` merges any adapter into any base file.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
from safetensors import safe_open

from ovi.checkpoints import TrainingMetadata, atomic_save_safetensors, save_fusion_checkpoint
from ovi.logs import setup_logging
from ovi.lora import LORA_KEY, AdapterInfo, base_name, merge_adapter
from train.checkpoint import TRAINER_META, latest_checkpoint
from train.ema import full_ema

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
MODEL_STATES = "mp_rank_00_model_states.pt"


def _consolidated(checkpoint: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, fp32 tensor) of every parameter; ZeRO shards are merged one tensor at a time."""
    if any(checkpoint.glob("*_optim_states.pt")) and any(checkpoint.glob("*zero_pp_rank_*")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        lazy = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint.parent), tag=checkpoint.name, lazy_mode=True)
        for name, t in lazy.items():
            yield name, t.contiguous()
    else:  # ZeRO stage 0: the full module is in the model-states file
        states = torch.load(checkpoint / MODEL_STATES, map_location="cpu", weights_only=False)
        yield from states["module"].items()


def _add_frozen(state: dict[str, torch.Tensor], sources: dict[str, list[str]], trained: torch.dtype,
                dtype: torch.dtype) -> None:
    """Frozen weights a checkpoint left out (checkpoint.save_frozen=false), read back from their init files and
    rounded to the training precision first: the values the model trained with."""
    by_file: dict[str, list[tuple[str, str]]] = {}
    for name, (path, key) in sources.items():
        if name not in state:
            by_file.setdefault(path, []).append((name, key))
    for path, pairs in by_file.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} held frozen weights this checkpoint left out; put it back to export")
        with safe_open(path, "pt") as f:
            for name, key in pairs:
                state[name] = f.get_tensor(key).to(trained).to(dtype).contiguous()


def adapter_path(out: Path) -> Path:
    """Where a LoRA run's adapter is written beside its merged export: fusion.safetensors -> fusion_lora.safetensors."""
    return out.with_name(out.stem + "_lora.safetensors")


def _use_ema(state: dict[str, torch.Tensor], checkpoint: Path, dtype: torch.dtype) -> None:
    ema = full_ema(checkpoint)
    if not ema:
        raise FileNotFoundError(f"{checkpoint} holds no EMA (the run had ema.decay=0); export without --ema")
    for name, value in ema.items():
        state[name] = value.to(dtype).contiguous()


def _split_lora(state: dict[str, torch.Tensor], info: AdapterInfo, out: Path) -> dict[str, torch.Tensor]:
    """Write the adapter alone (fp32) beside ``out``; return the base weights merged with it (release keys)."""
    adapter, base = {}, {}
    for name, t in state.items():
        m = LORA_KEY.search(name)
        if m:
            adapter[name[: m.start()] + f".lora_{m.group(1)}.weight"] = t.float().contiguous()
        else:
            base[base_name(name)] = t
    atomic_save_safetensors(adapter, adapter_path(out), info)
    log.info("wrote the LoRA adapter (%d tensors) to %s", len(adapter), adapter_path(out))
    return merge_adapter(base, adapter, info)


def export_checkpoint(checkpoint: Path, out: Path, dtype: torch.dtype = torch.bfloat16, use_ema: bool = False,
                      only: Sequence[str] = ()) -> Path:
    """Write ``checkpoint`` (a committed step folder) as one safetensors file at ``out``.

    ``use_ema``: the EMA of the trainable weights instead of the raw ones. ``only``: keep just the tensors whose
    names match one of these globs (a partial file: not a model, but e.g. V2A weights, ``ovi.pass_weights``). A
    LoRA run also writes its adapter alone (``adapter_path(out)``) and ``out`` holds the base with the adapter
    merged in (release format)."""
    meta = json.loads((checkpoint / TRAINER_META).read_text())
    # Checkpoints from before the metadata existed hold only the stage; the export then says only that.
    training = TrainingMetadata(**{f.name: meta.get(f.name) for f in fields(TrainingMetadata)})
    state = {name: t.to(dtype).contiguous() for name, t in _consolidated(checkpoint)}
    _add_frozen(state, meta.get("frozen_sources", {}), DTYPES.get(meta.get("precision"), dtype), dtype)
    if use_ema:
        _use_ema(state, checkpoint, dtype)
    if meta.get("lora"):
        state = _split_lora(state, AdapterInfo(**meta["lora"]), out)
    if only:
        state = {k: v for k, v in state.items() if any(fnmatch.fnmatchcase(k, pattern) for pattern in only)}
        if not state:
            raise ValueError(f"--only {' '.join(only)} matches no tensor of {checkpoint} (names look like "
                             "'audio_model.blocks.0.self_attn.q.weight')")
    if meta["stage"] == "fusion":
        save_fusion_checkpoint(state, out, metadata=training)
    else:
        atomic_save_safetensors(state, out, training)
    log.info("exported %s (%d tensors, %s) to %s", checkpoint, len(state), dtype, out)
    return out


def resolve_checkpoint(ckpt_dir: Path, tag: Optional[str]) -> Path:
    if tag:
        path = ckpt_dir / tag
        if not (path / TRAINER_META).is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no {TRAINER_META})")
        return path
    path = latest_checkpoint(ckpt_dir)
    if path is None:
        raise FileNotFoundError(f"no committed checkpoint in {ckpt_dir} (no 'latest' file)")
    return path


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint_dir", type=Path, help="the run's checkpoint folder (holds 'latest')")
    parser.add_argument("--tag", help="checkpoint to export, e.g. step_001000 (default: latest)")
    parser.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights (runs with ema.decay > 0)")
    parser.add_argument("--only", action="append", default=[], metavar="GLOB",
                        help="only tensors whose names match (repeatable), e.g. 'audio_model.*'")
    args = parser.parse_args(argv)
    setup_logging(logging.INFO, "%(asctime)s %(levelname)s %(message)s")
    export_checkpoint(resolve_checkpoint(args.checkpoint_dir, args.tag), args.out, DTYPES[args.dtype], args.ema,
                      args.only)


if __name__ == "__main__":
    main()
