"""Reading MMAudio's two release files, the audio codec's weights.

Both come from the hub repo hkchengrex/MMAudio: ``ext_weights/v1-16.pth`` (the VAE, a plain
state_dict) and ``ext_weights/best_netG.pt`` (the vocoder, ``{'generator': state_dict}``);
``ovi-download`` puts them under ``checkpoints/MMAudio/ext_weights/``. Key checks and the plain
state_dict reader are the project's shared ones (``ovi.state_dict_utils``).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ovi.state_dict_utils import StateDictMismatchError, load_release_state_dict

MMAUDIO_HUB_REPO = "hkchengrex/MMAudio"
MMAUDIO_LOCAL_DIR = "checkpoints/MMAudio/ext_weights"
VAE_RELEASE_FILE = "v1-16.pth"
VOCODER_RELEASE_FILE = "best_netG.pt"
VOCODER_CHECKPOINT_KEY = "generator"


def download_hint(release_file: str) -> str:
    return (
        f"Run `ovi-download` to fetch it into {MMAUDIO_LOCAL_DIR}/ "
        f"(hub repo {MMAUDIO_HUB_REPO}, file ext_weights/{release_file})."
    )


def read_vae_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``v1-16.pth``: a plain state_dict of raw (not yet normalised) weights and data_mean / data_std."""
    return load_release_state_dict(
        path, what="MMAudio audio VAE", expected_file=VAE_RELEASE_FILE, download_hint=download_hint(VAE_RELEASE_FILE)
    )


def read_vocoder_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``best_netG.pt``: the generator state_dict stored under the ``'generator'`` key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"BigVGAN vocoder weights not found at {path}: expected the released file `{VOCODER_RELEASE_FILE}`. "
            + download_hint(VOCODER_RELEASE_FILE)
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    generator = ckpt.get(VOCODER_CHECKPOINT_KEY) if isinstance(ckpt, Mapping) else None
    if not isinstance(generator, Mapping):
        found = sorted(ckpt)[:5] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise StateDictMismatchError(
            f"{path} is not a BigVGAN training checkpoint: expected {{'{VOCODER_CHECKPOINT_KEY}': state_dict}} as in "
            f"the released `{VOCODER_RELEASE_FILE}`, found {found}"
        )
    return dict(generator)


def to_at_least_float32(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Upcast half-precision tensors: the load-time weight normalisations are computed in float32."""
    return {k: v.to(torch.promote_types(v.dtype, torch.float32)) for k, v in state_dict.items()}
