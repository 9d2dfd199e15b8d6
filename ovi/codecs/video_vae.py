"""Wan2.2 video VAE (diffusers ``AutoencoderKLWan``) with Ovi's latent normalisation and release-file loading.

Video ``[B, 3, T, H, W]`` in [-1, 1] <-> normalised latent ``[B, 48, 1 + (T - 1) // 4, H / 16, W / 16]``.
The encoder runs the first frame alone and then causal chunks of 4 frames, so frames beyond ``1 + 4k``
are dropped, exactly as in the reference; decoding ``F`` latent frames gives ``1 + 4 (F - 1)`` frames.

Precision. The released ``Wan2.2_VAE.pth`` is float32. Ovi's engine casts the VAE to bfloat16 but runs
it under CUDA autocast with float32 as the target, so on a GPU every op computes in float32 from
bf16-rounded weights. :class:`VideoVAE` reproduces that on any device with ``dtype=torch.bfloat16,
compute_dtype=torch.float32``: weights are stored in bf16 and each submodule sees float32 copies of its
own weights only while it runs (one layer's worth of extra memory at a time). ``compute_dtype`` defaults
to the storage dtype (plain float32 or plain bfloat16).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify as _diffusers_unpatchify
from torch import nn

from ovi.release import DEFAULT_ROOT, VIDEO_VAE
from ovi.state_dict_utils import check_state_dict, load_release_state_dict, rename_keys

# The per-channel statistics Ovi (Wan2.2) normalises latents with: encode (mu - mean) / std,
# decode z * std + mean. They live in diffusers' config fields so a diffusers-format ``vae/`` folder
# carries its own; these are the release values used when loading the original ``.pth``.
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]  # fmt: skip
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]  # fmt: skip

# AutoencoderKLWan arguments of the Wan2.2-TI2V-5B VAE (encoder width 160, decoder width 256, 2x2 pixel
# patchify, 16x spatial and 4x causal temporal compression). Override widths for reduced test models.
WAN22_VAE_CONFIG: dict[str, Any] = {
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 16,
    "latents_mean": WAN22_LATENTS_MEAN,
    "latents_std": WAN22_LATENTS_STD,
}

VIDEO_CHANNELS = 3

# Original Wan2.2 ``WanVAE_`` names -> diffusers ``AutoencoderKLWan`` names, applied in order. Inside a
# down/up stage the original numbers residual blocks and the resampler in one list; the resampler is the
# entry holding ``resample`` / ``time_conv`` weights.
_WAN22_TO_DIFFUSERS: list[tuple[str, str]] = [
    (r"^conv1\.", "quant_conv."),
    (r"^conv2\.", "post_quant_conv."),
    (r"^(encoder|decoder)\.conv1\.", r"\1.conv_in."),
    (r"^(encoder|decoder)\.head\.0\.", r"\1.norm_out."),
    (r"^(encoder|decoder)\.head\.2\.", r"\1.conv_out."),
    (r"\.middle\.0\.", ".mid_block.resnets.0."),
    (r"\.middle\.1\.", ".mid_block.attentions.0."),
    (r"\.middle\.2\.", ".mid_block.resnets.1."),
    (
        r"^encoder\.downsamples\.(\d+)\.downsamples\.\d+\.(resample|time_conv)\.",
        r"encoder.down_blocks.\1.downsampler.\2.",
    ),
    (r"^encoder\.downsamples\.(\d+)\.downsamples\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2."),
    (r"^decoder\.upsamples\.(\d+)\.upsamples\.\d+\.(resample|time_conv)\.", r"decoder.up_blocks.\1.upsampler.\2."),
    (r"^decoder\.upsamples\.(\d+)\.upsamples\.(\d+)\.", r"decoder.up_blocks.\1.resnets.\2."),
    (r"\.residual\.0\.", ".norm1."),
    (r"\.residual\.2\.", ".conv1."),
    (r"\.residual\.3\.", ".norm2."),
    (r"\.residual\.6\.", ".conv2."),
    (r"\.shortcut\.", ".conv_shortcut."),
]


def wan22_vae_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The release ``AutoencoderKLWan`` arguments with ``overrides`` applied (unknown names are an error)."""
    config = dict(WAN22_VAE_CONFIG)
    for key, value in (overrides or {}).items():
        if key not in config:
            raise ValueError(f"unknown Wan2.2 VAE config key {key!r}; valid keys: {sorted(config)}")
        config[key] = value
    return config


def build_wan22_vae(
    overrides: Mapping[str, Any] | None = None, device: torch.device | str | None = None
) -> AutoencoderKLWan:
    """Construct ``AutoencoderKLWan`` (random init, or parameter-free shells with ``device='meta'``)."""
    with torch.device(device or "cpu"):
        return AutoencoderKLWan(**wan22_vae_config(overrides))


def convert_wan22_vae_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``Wan2.2_VAE.pth`` state_dict to diffusers ``AutoencoderKLWan`` keys (tensors shared)."""
    return rename_keys(state, _WAN22_TO_DIFFUSERS)


@contextmanager
def _weights_cast_while_running(model: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """For the duration of the context, each submodule computes with ``dtype`` copies of its own weights.

    The copies exist only while that submodule's forward runs, so storage stays in the original dtype
    and the extra memory is one layer's weights (this is what CUDA autocast to float32 does per op).
    """
    owners = [m for m in model.modules() if any(p.dtype != dtype for p in m.parameters(recurse=False))]
    swapped: dict[nn.Module, dict[str, nn.Parameter]] = {}

    def cast_in(module: nn.Module, args: Any) -> None:
        originals = {n: p for n, p in module._parameters.items() if p is not None and p.dtype != dtype}
        for name, param in originals.items():
            module._parameters[name] = param.to(dtype)  # type: ignore[assignment]  # a plain tensor, dropped after
        swapped[module] = originals

    def restore(module: nn.Module, *_: Any) -> None:
        module._parameters.update(swapped.pop(module, {}))

    handles = [h for m in owners for h in (m.register_forward_pre_hook(cast_in), m.register_forward_hook(restore))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module in list(swapped):  # a forward that raised never reached its restore hook
            restore(module)


class VideoVAE(nn.Module):
    """Ovi's video codec: ``encode`` = Wan2.2 ``wrapped_encode``, ``decode`` = ``wrapped_decode``.

    ``model`` is a diffusers ``AutoencoderKLWan`` whose config holds ``latents_mean`` / ``latents_std``.
    ``compute_dtype`` (default: the weights' dtype) is the dtype every op runs in; see the module doc.
    """

    def __init__(self, model: AutoencoderKLWan, compute_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        z_dim = model.config.z_dim
        mean, std = model.config.latents_mean, model.config.latents_std
        if len(mean) != z_dim or len(std) != z_dim:
            raise ValueError(
                f"the VAE config has {len(mean)} latents_mean / {len(std)} latents_std values for z_dim {z_dim}: "
                "this is not a Wan2.2 VAE config (Wan2.1's has 16); use the Wan2.2-TI2V-5B `vae/` folder "
                "or VideoVAE.from_wan_checkpoint"
            )
        self.model = model.requires_grad_(False).eval()
        self.compute_dtype = compute_dtype or self.dtype
        # Kept in float32 (not buffers, so ``.to(dtype)`` leaves them alone), as the reference holds them;
        # the reference multiplies by the float32 reciprocal of std rather than dividing.
        self._latents_mean = torch.tensor(mean, dtype=torch.float32)  # [z]
        self._latents_inv_std = 1.0 / torch.tensor(std, dtype=torch.float32)  # [z]

    # ----------------------------------------------------------------------------------- properties
    @property
    def dtype(self) -> torch.dtype:
        """Storage dtype of the weights."""
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def z_dim(self) -> int:
        return int(self.model.config.z_dim)

    @property
    def temporal_compression(self) -> int:
        return int(self.model.config.scale_factor_temporal)

    @property
    def spatial_compression(self) -> int:
        return int(self.model.config.scale_factor_spatial)

    @property
    def latents_mean(self) -> torch.Tensor:
        """float32 ``[z]``: subtracted from the posterior mean on encode."""
        return self._latents_mean

    @property
    def latents_inv_std(self) -> torch.Tensor:
        """float32 ``[z]``: ``1 / latents_std``, multiplied in on encode (divided out on decode)."""
        return self._latents_inv_std

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for ``num_frames`` video frames (trailing frames beyond ``1 + 4k`` are dropped)."""
        return 1 + (num_frames - 1) // self.temporal_compression

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.z_dim, 1, 1, 1)
        return (
            self._latents_mean.to(like.device).view(shape),
            self._latents_inv_std.to(like.device).view(shape),
        )

    @contextmanager
    def _compute(self) -> Iterator[None]:
        if self.compute_dtype == self.dtype:
            yield
        else:
            with _weights_cast_while_running(self.model, self.compute_dtype):
                yield

    # ------------------------------------------------------------------------------------- codec
    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``video [B, 3, T, H, W]`` in [-1, 1] -> normalised posterior mean ``[B, z, 1 + (T-1)//4, H/16, W/16]``.

        The latent comes back in the wider of ``compute_dtype`` and float32 (the normalisation runs in
        float32 like the reference's).
        """
        if video.dim() != 5 or video.shape[1] != VIDEO_CHANNELS:
            raise ValueError(f"expected a video [B, 3, T, H, W], got shape {tuple(video.shape)}")
        h, w = video.shape[-2:]
        if h % self.spatial_compression or w % self.spatial_compression:
            raise ValueError(
                f"video height and width must be multiples of {self.spatial_compression}, got {h}x{w}; "
                "resize or crop the frames first"
            )
        with self._compute():
            posterior = self.model.encode(video.to(device=self.device, dtype=self.compute_dtype)).latent_dist
        mu = posterior.mode()  # [B, z, F, h, w]
        mean, inv_std = self._stats(mu)
        return (mu - mean) * inv_std

    def enable_tiling(self, tile: int = 256, stride: int = 192) -> None:
        """Decode in overlapping ``tile`` x ``tile`` pixel tiles every ``stride`` pixels (diffusers' tiling, seams
        blended): the decoder's activations are one tile's instead of the whole frame's. Not bit-equal to the
        untiled decode (the blend); its deviation is measured in tests/test_parallel_vae.py."""
        self.model.enable_tiling(tile, tile, stride, stride)

    @property
    def tiling(self) -> bool:
        return bool(getattr(self.model, "use_tiling", False))

    def _denormalise(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.dim() != 5 or latent.shape[1] != self.z_dim:
            raise ValueError(f"expected a latent [B, {self.z_dim}, F, h, w], got shape {tuple(latent.shape)}")
        mean, inv_std = self._stats(latent)
        return (latent / inv_std + mean).to(device=self.device, dtype=self.compute_dtype)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, chunk_frames: int = 0, out_device: torch.device | str | None = None
               ) -> torch.Tensor:
        """Normalised ``latent [B, z, F, h, w]`` -> video ``[B, 3, 1 + 4(F-1), 16h, 16w]`` clamped to [-1, 1].

        ``chunk_frames > 0`` (untiled only): decode that many latent frames at a time and move each chunk to
        ``out_device`` (default: the VAE's device) as it is done (:meth:`decode_chunks`): the same numbers, and
        the compute device never holds the whole clip (3 x 241 x 960 x 960 float32 = 2.7 GB, twice while
        diffusers concatenates).
        """
        if chunk_frames > 0 and not self.tiling:
            return torch.cat([c.to(out_device or self.device) for c in self.decode_chunks(latent, chunk_frames)], 2)
        with self._compute():
            # diffusers' decode clamps to [-1, 1], as the reference's wrapped_decode does.
            video = self.model.decode(self._denormalise(latent)).sample
        return video if out_device is None else video.to(out_device)

    @torch.no_grad()
    def decode_chunks(self, latent: torch.Tensor, chunk_frames: int = 1) -> Iterator[torch.Tensor]:
        """Video ``[B, 3, T_k, H, W]`` per ``chunk_frames`` latent frames (the first chunk's first latent frame
        gives 1 video frame, every other 4); concatenated over time they equal :meth:`decode`.

        diffusers' decoder is causal and already runs one latent frame at a time with a feature cache; this runs
        the same loop (``AutoencoderKLWan._decode``) but hands each chunk out instead of concatenating it.
        """
        if self.tiling:
            raise ValueError("decode_chunks runs the untiled decoder; disable tiling or use decode()")
        model = self.model
        z = self._denormalise(latent)
        with self._compute():
            model.clear_cache()
            try:
                for start in range(0, z.shape[2], chunk_frames):
                    outs = []
                    for i in range(start, min(start + chunk_frames, z.shape[2])):
                        model._conv_idx = [0]
                        x = model.post_quant_conv(z[:, :, i : i + 1])  # a 1x1x1 conv: per frame is exact
                        outs.append(model.decoder(x, feat_cache=model._feat_map, feat_idx=model._conv_idx,
                                                  first_chunk=i == 0))
                    out = torch.cat(outs, 2)
                    if model.config.patch_size is not None:
                        out = _diffusers_unpatchify(out, model.config.patch_size)
                    yield out.clamp(-1.0, 1.0)
            finally:
                model.clear_cache()

    # ----------------------------------------------------------------------------------- loaders
    @classmethod
    def from_wan_checkpoint(
        cls,
        path: str | Path = f"{DEFAULT_ROOT}/{VIDEO_VAE.local}",
        *,
        config_overrides: Mapping[str, Any] | None = None,
        dtype: torch.dtype = torch.float32,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
    ) -> VideoVAE:
        """Load the released ``Wan2.2_VAE.pth`` (original key names), strictly.

        ``dtype`` is the storage dtype and ``compute_dtype`` the arithmetic dtype (see the module doc;
        Ovi's engine path is ``dtype=torch.bfloat16, compute_dtype=torch.float32``).
        ``config_overrides`` changes ``WAN22_VAE_CONFIG`` entries (e.g. widths of a reduced model).
        """
        state = load_release_state_dict(
            path, what="Wan2.2 VAE", expected_file=VIDEO_VAE.name, download_hint=VIDEO_VAE.download_hint()
        )
        state = convert_wan22_vae_state_dict(state)
        model = build_wan22_vae(config_overrides, device="meta")
        expected = {k: v.shape for k, v in model.state_dict().items()}
        check_state_dict(
            expected,
            state,
            source=f"{path} (after renaming Wan2.2 keys to diffusers')",
            hint=f"Expected the original {VIDEO_VAE.name} of {VIDEO_VAE.repo} with config overrides "
            f"{dict(config_overrides or {})} (a model of other widths needs matching config_overrides)",
        )
        # Cast before assigning (as the engine casts after loading): no float32 copy of the whole model.
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
        return cls(model.to(device=device), compute_dtype=compute_dtype)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        compute_dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
    ) -> VideoVAE:
        """Load a diffusers-format ``vae/`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``),
        e.g. ``Wan-AI/Wan2.2-TI2V-5B-Diffusers/vae``, or a folder written by ``self.model.save_pretrained``."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"no diffusers VAE folder at {path}: expected config.json and diffusion_pytorch_model.safetensors "
                "there (the `vae/` folder of Wan-AI/Wan2.2-TI2V-5B-Diffusers). For the original release file use "
                "VideoVAE.from_wan_checkpoint."
            )
        model = AutoencoderKLWan.from_pretrained(path, torch_dtype=dtype)
        return cls(model.to(device=device), compute_dtype=compute_dtype)
