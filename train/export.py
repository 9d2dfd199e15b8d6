"""Consolidate a (sharded) training checkpoint into one safetensors file the rest of the project loads.

- fusion: the released Ovi key format (``video_model.blocks.0.self_attn.q.weight`` ...), loadable with
  ``ovi.checkpoints.load_fusion_checkpoint`` and so by the generation pipeline;
- audio stages: a standalone audio tower (``blocks.0.self_attn.q.weight`` ...), what ``init.audio_tower``
  of the next stage takes.

Usage::

    python -m train.export runs/fusion/checkpoints [--tag step_010000] --out ovi_finetuned.safetensors [--dtype bf16]
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Iterator, Optional

import torch
from safetensors import safe_open

from ovi.checkpoints import TrainingMetadata, atomic_save_safetensors, save_fusion_checkpoint
from train.checkpoint import TRAINER_META, latest_checkpoint

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


def _add_frozen(state: dict[str, torch.Tensor], sources: dict[str, list[str]], dtype: torch.dtype) -> None:
    """Frozen weights a checkpoint left out (checkpoint.save_frozen=false), read back from their init files."""
    by_file: dict[str, list[tuple[str, str]]] = {}
    for name, (path, key) in sources.items():
        if name not in state:
            by_file.setdefault(path, []).append((name, key))
    for path, pairs in by_file.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} held frozen weights this checkpoint left out; put it back to export")
        with safe_open(path, "pt") as f:
            for name, key in pairs:
                state[name] = f.get_tensor(key).to(dtype).contiguous()


def export_checkpoint(checkpoint: Path, out: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write ``checkpoint`` (a committed step folder) as one safetensors file at ``out``."""
    meta = json.loads((checkpoint / TRAINER_META).read_text())
    # Checkpoints from before the metadata existed hold only the stage; the export then says only that.
    training = TrainingMetadata(**{f.name: meta.get(f.name) for f in fields(TrainingMetadata)})
    state = {name: t.to(dtype).contiguous() for name, t in _consolidated(checkpoint)}
    _add_frozen(state, meta.get("frozen_sources", {}), dtype)
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    export_checkpoint(resolve_checkpoint(args.checkpoint_dir, args.tag), args.out, DTYPES[args.dtype])


if __name__ == "__main__":
    main()
