"""Reading MMAudio's two release files, the audio codec's weights.

Which files and where they land: ``ovi.release`` (``AUDIO_VAE``: a plain state_dict; ``VOCODER``:
``{'generator': state_dict}``). Key checks and the plain state_dict reader are the project's shared ones
(``ovi.state_dict_utils``).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ovi.release import AUDIO_VAE, VOCODER, VOCODER_CHECKPOINT_KEY
from ovi.state_dict_utils import StateDictMismatchError, load_release_state_dict


def read_vae_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``v1-16.pth``: a plain state_dict of raw (not yet normalised) weights and data_mean / data_std."""
    return load_release_state_dict(
        path, what="MMAudio audio VAE", expected_file=AUDIO_VAE.name, download_hint=AUDIO_VAE.download_hint()
    )


def read_vocoder_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``best_netG.pt``: the generator state_dict stored under the ``'generator'`` key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"BigVGAN vocoder weights not found at {path}: expected the released file `{VOCODER.name}`. "
            + VOCODER.download_hint()
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    generator = ckpt.get(VOCODER_CHECKPOINT_KEY) if isinstance(ckpt, Mapping) else None
    if not isinstance(generator, Mapping):
        found = sorted(ckpt)[:5] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise StateDictMismatchError(
            f"{path} is not a BigVGAN training checkpoint: expected {{'{VOCODER_CHECKPOINT_KEY}': state_dict}} as in "
            f"the released `{VOCODER.name}`, found {found}"
        )
    return dict(generator)


def to_at_least_float32(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Upcast half-precision tensors: the load-time weight normalisations are computed in float32."""
    return {k: v.to(torch.promote_types(v.dtype, torch.float32)) for k, v in state_dict.items()}
