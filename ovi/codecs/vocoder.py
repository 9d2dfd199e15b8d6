"""The BigVGAN (v1 architecture) 16 kHz vocoder behind Ovi's audio VAE, via the PyPI ``bigvgan`` package.

mel [B, 80, T] (log10, as ``ovi.codecs.mel`` computes it) -> waveform [B, 1, 256 T] in [-1, 1].

PyPI ``bigvgan`` builds exactly the released network from the values of MMAudio's
``bigvgan_vocoder.yml`` (same tensors, bitwise-equal output). The only difference is naming:
``best_netG.pt['generator']`` may hold legacy weight-norm names (``*.weight_g`` / ``*.weight_v``, what
PyPI bigvgan uses) or ``torch.nn.utils.parametrizations`` names
(``*.parametrizations.weight.original0`` / ``original1``); both are accepted and renamed.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ovi.codecs.audio_checkpoint import read_vocoder_state_dict, to_at_least_float32
from ovi.codecs.mel import HOP_LENGTH, N_MELS
from ovi.release import VOCODER
from ovi.state_dict_utils import check_state_dict, rename_keys

# The generator-relevant values of MMAudio's bigvgan_vocoder.yml (its other keys are training settings).
RELEASE_VOCODER_CONFIG: dict[str, Any] = {
    "resblock": "1",
    "num_mels": N_MELS,
    "upsample_rates": [4, 4, 2, 2, 2, 2],
    "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 1536,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "activation": "snakebeta",
    "snake_logscale": True,
}

# Weight-norm tensor names: legacy torch.nn.utils.weight_norm (PyPI bigvgan) vs torch.nn.utils.parametrizations.
_TO_LEGACY_NAMES = (
    (r"\.parametrizations\.weight\.original0$", ".weight_g"),
    (r"\.parametrizations\.weight\.original1$", ".weight_v"),
)
_TO_PARAMETRIZATION_NAMES = (
    (r"\.weight_g$", ".parametrizations.weight.original0"),
    (r"\.weight_v$", ".parametrizations.weight.original1"),
)


def vocoder_config(overrides: Mapping[str, Any] | str | Path | None = None) -> dict[str, Any]:
    """Release config updated with ``overrides`` (a mapping, or a bigvgan_vocoder.yml-style YAML file)."""
    if overrides is None:
        overrides = {}
    elif isinstance(overrides, (str, Path)):
        from omegaconf import OmegaConf  # only needed for YAML configs

        path = Path(overrides)
        if not path.is_file():
            raise FileNotFoundError(f"vocoder config not found: {path} (expected a bigvgan_vocoder.yml-style YAML)")
        overrides = OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[assignment]
    cfg = {**RELEASE_VOCODER_CONFIG, **dict(overrides)}
    hop = math.prod(cfg["upsample_rates"])
    if hop != HOP_LENGTH:
        raise ValueError(
            f"vocoder upsample_rates {cfg['upsample_rates']} give {hop} samples per mel frame; the 16 kHz mel "
            f"front end uses hop {HOP_LENGTH}: keep the release rates [4, 4, 2, 2, 2, 2]"
        )
    return cfg


def to_legacy_weight_norm_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``*.parametrizations.weight.original0/1`` -> ``*.weight_g`` / ``*.weight_v`` (others unchanged)."""
    return rename_keys(state_dict, _TO_LEGACY_NAMES)


def to_parametrization_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``*.weight_g`` / ``*.weight_v`` -> ``*.parametrizations.weight.original0/1`` (the reference's names)."""
    return rename_keys(state_dict, _TO_PARAMETRIZATION_NAMES)


def build_vocoder(config: Mapping[str, Any] | str | Path | None = None) -> nn.Module:
    """PyPI BigVGAN generator (with weight norm, random init) from the release config plus ``config``."""
    from bigvgan import BigVGAN  # heavy import (librosa, matplotlib): only when a vocoder is built
    from bigvgan.env import AttrDict

    with warnings.catch_warnings():
        # bigvgan wraps its convs in the legacy torch.nn.utils.weight_norm (deprecated, still supported):
        # that is what gives the release file's *.weight_g / *.weight_v names, so it is kept on purpose.
        warnings.filterwarnings("ignore", message=".*weight_norm.* is deprecated", category=FutureWarning)
        # The fused CUDA activation kernel needs a JIT build and is not the reference's arithmetic.
        return BigVGAN(AttrDict(vocoder_config(config)), use_cuda_kernel=False)


def build_vocoder_on_meta(config: Mapping[str, Any] | str | Path | None = None) -> nn.Module:
    """The vocoder with meta tensors: shapes and key names only."""
    with torch.device("meta"):
        return build_vocoder(config)


@torch.no_grad()
def remove_weight_norm(vocoder: nn.Module) -> nn.Module:
    """Fold every legacy weight norm (g * v / ||v||) into a plain ``weight``, as done once for inference."""
    for module in vocoder.modules():
        if hasattr(module, "weight_g"):
            torch.nn.utils.remove_weight_norm(module)
    return vocoder


def load_vocoder(
    path: str | Path,
    *,
    config: Mapping[str, Any] | str | Path | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Load ``best_netG.pt`` (``{'generator': state_dict}``, either weight-norm naming), strict; fold weight norm."""
    state_dict = to_legacy_weight_norm_names(read_vocoder_state_dict(path))
    cfg = vocoder_config(config)
    vocoder = build_vocoder_on_meta(cfg)
    check_state_dict(
        {k: v.shape for k, v in vocoder.state_dict().items()},
        state_dict,
        source=f"BigVGAN vocoder file {path}",
        hint=f"The model was built with upsample_initial_channel={cfg['upsample_initial_channel']} "
        f"(release {RELEASE_VOCODER_CONFIG['upsample_initial_channel']}); "
        f"pass the matching vocoder_config or the released {VOCODER.name}",
    )
    vocoder.load_state_dict(to_at_least_float32(state_dict), strict=True, assign=True)
    remove_weight_norm(vocoder)
    return vocoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
