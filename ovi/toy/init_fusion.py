"""The toy's stage-2 starting point: the reference initialisation with the stage-1 audio tower in it.

    python -m ovi.toy.init_fusion --model configs/model/toy.yaml --audio-tower A.safetensors --out F.safetensors \
        [--unfused] [--seed 0]

No Wan2.2 DiT exists at toy width, so the video tower starts from the reference initialisation and trains jointly
(configs/train/toy_fusion.yaml). ``--unfused`` zeroes every cross-modal value projection (``v_fusion``): the
cross-modal attention then adds exactly zero, and with those layers frozen the model is the same two towers
without fusion (the baseline of the sync proof: sync only through the prompt).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from ovi.checkpoints import save_fusion_checkpoint
from ovi.config import load_fusion_config
from ovi.models.fusion import FusionModel
from ovi.models.tower import Tower

AUDIO_PREFIX = "audio_model."


def fusion_init(model_cfg_path: str | Path, audio_tower: str | Path, seed: int = 0,
                unfused: bool = False) -> dict[str, torch.Tensor]:
    """State dict of a ``FusionModel`` (reference init) whose audio tower is the stage-1 export."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FusionModel(load_fusion_config(model_cfg_path))
    state = model.state_dict()
    audio = load_file(str(audio_tower))
    expected = {k[len(AUDIO_PREFIX):] for k in state if k.startswith(AUDIO_PREFIX) and not Tower.is_cross_modal(k)}
    missing, extra = expected - set(audio), set(audio) - expected
    if missing or extra:
        raise ValueError(f"{audio_tower} is not a stage-1 audio tower of this model config (missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(extra)[:3]}); export stage 1 with the same configs/model file")
    for k, v in audio.items():
        state[AUDIO_PREFIX + k] = v.to(state[AUDIO_PREFIX + k].dtype)
    if unfused:
        for k in state:
            if ".v_fusion." in k:
                state[k] = torch.zeros_like(state[k])
    return state


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--audio-tower", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--unfused", action="store_true", help="zero the cross-modal values (the baseline)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_fusion_checkpoint(fusion_init(a.model, a.audio_tower, a.seed, a.unfused), a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
