"""Typed configs: dataclass schemas merged with OmegaConf YAML.

Every YAML under ``configs/`` is loaded through a schema here (or in ``train/config.py`` and
``data_pipeline/config.py``), so a misspelt key or a missing mandatory value is an error that names it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ovi.geometry import ClipGeometry
from ovi.sampling import (
    DEFAULT_AUDIO_GUIDANCE,
    DEFAULT_AUDIO_NEGATIVE_PROMPT,
    DEFAULT_NUM_STEPS,
    DEFAULT_SHIFT,
    DEFAULT_SLG_LAYER,
    DEFAULT_SOLVER,
    DEFAULT_VIDEO_GUIDANCE,
    DEFAULT_VIDEO_NEGATIVE_PROMPT,
)
from ovi.release import CheckpointPaths  # noqa: F401  (the release layout's owner; InferenceConfig holds one)

T = TypeVar("T")

# The released audio tower places audio token l at video latent frame l * 0.19676, the shipped value
# (close to, but not, 31/157 = 0.19745; the difference is measurable against the reference).
AUDIO_ROPE_SCALE_RELEASED = 0.19676


@dataclass
class TowerConfig:
    """One Wan2.2-shaped DiT tower. ``modality`` picks the patch embedding and the RoPE layout."""

    modality: str = MISSING  # "video" (3-D RoPE, Conv3d patches) or "audio" (1-D RoPE, conv embedding)
    in_dim: int = MISSING  # latent channels: 48 (Wan2.2 VAE) or 20 (MMAudio VAE)
    out_dim: int = MISSING
    patch_size: list[int] = MISSING  # [1, 2, 2] for video, [1] for audio
    dim: int = 3072
    ffn_dim: int = 14336
    freq_dim: int = 256  # sinusoidal timestep features
    num_heads: int = 24
    num_layers: int = 30
    text_len: int = 512  # text contexts are zero-padded to this many tokens
    text_dim: int = 4096  # UMT5-XXL width
    eps: float = 1e-6
    # Frame-axis RoPE positions are index x this (ovi.models.rope): the release has 1.0 for video and
    # AUDIO_ROPE_SCALE_RELEASED for audio, which puts audio token l at video latent frame l * audio / video scale.
    rope_temporal_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.modality not in ("video", "audio", MISSING):
            raise ValueError(f"tower modality must be 'video' or 'audio', got {self.modality!r}")


@dataclass
class FusionConfig:
    """The twin-tower fusion model: one video and one audio tower with the same depth and head width."""

    video: TowerConfig = field(default_factory=lambda: TowerConfig(modality="video"))
    audio: TowerConfig = field(default_factory=lambda: TowerConfig(modality="audio"))

    def __post_init__(self) -> None:
        if self.video.num_layers != self.audio.num_layers and MISSING not in (
            self.video.num_layers,
            self.audio.num_layers,
        ):
            raise ValueError("video and audio towers must have the same num_layers (they fuse block by block)")
        # The widths may differ (cross-modal K/V project the other tower's width into this one's), but a query
        # and the other tower's keys are rotated by their own tower's RoPE table, so the head widths must agree.
        head_dims = {t.dim / t.num_heads for t in (self.video, self.audio)}
        if len(head_dims) > 1:
            raise ValueError(f"video and audio towers need the same head width (dim / num_heads), got "
                             f"{self.video.dim}/{self.video.num_heads} and {self.audio.dim}/{self.audio.num_heads}")


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Merge ``schema`` defaults, the YAML at ``path`` and ``key=value`` overrides into a schema instance.

    Unknown keys, wrong types and missing mandatory values raise ``ValueError`` naming the key.
    """
    base = OmegaConf.structured(schema)
    try:
        layers = [base]
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"config file not found: {path}")
            layers.append(OmegaConf.load(path))
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        where = f" in {path}" if path is not None else ""
        raise ValueError(f"invalid config{where}: {e}") from e


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def load_fusion_config(path: str | Path, overrides: Sequence[str] = ()) -> FusionConfig:
    return load_config(FusionConfig, path, overrides)


def fusion_config_from_yaml(text: str) -> FusionConfig:
    """A FusionConfig from YAML text (as ``to_yaml`` writes it, e.g. into a trained export's metadata)."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(FusionConfig), OmegaConf.create(text)))
    except OmegaConfBaseException as e:
        raise ValueError(f"invalid model config: {e}") from e


# Options of the reference's WanModel that the released towers do not use; we support only these values.
_REFERENCE_FIXED = {"qk_norm": True, "cross_attn_norm": True, "window_size": [-1, -1]}


def tower_config_from_reference(kwargs: dict[str, Any]) -> TowerConfig:
    """Map the reference's tower kwargs (Ovi's ``configs/model/dit/{video,audio}.json``) to a TowerConfig."""
    for key, value in _REFERENCE_FIXED.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(f"reference option {key}={kwargs[key]!r} is not supported (the release uses {value!r})")
    modality = {"ti2v": "video", "t2v": "video", "t2a": "audio"}.get(kwargs.get("model_type", ""))
    if modality is None:
        raise ValueError(f"unknown reference model_type {kwargs.get('model_type')!r}; expected ti2v, t2v or t2a")
    names = {f: f for f in ("in_dim", "out_dim", "dim", "ffn_dim", "freq_dim", "num_heads", "num_layers",
                            "text_len", "text_dim", "eps")}
    names["temporal_rope_scaling_factor"] = "rope_temporal_scale"
    fields = {names[k]: v for k, v in kwargs.items() if k in names}
    return TowerConfig(modality=modality, patch_size=list(kwargs["patch_size"]), **fields)


def fusion_config_from_reference(video_kwargs: dict[str, Any], audio_kwargs: dict[str, Any]) -> FusionConfig:
    return FusionConfig(video=tower_config_from_reference(video_kwargs), audio=tower_config_from_reference(audio_kwargs))


@dataclass
class InferenceConfig:
    """Everything ``ovi-generate`` needs; presets live in configs/inference/."""

    model: str = "configs/model/ovi_11b.yaml"  # fusion model config (YAML path)
    variant: str = "960x960_10s"  # 720x720_5s | 960x960_5s | 960x960_10s: prompt style of that checkpoint
    checkpoints: CheckpointPaths = field(default_factory=CheckpointPaths)
    random_weights: bool = False  # tiny random components, no files: a CPU smoke run (output is noise)

    # Shape of what is generated (ovi.imaging: the reference's rules, nearest multiple of 32).
    area: int = 960 * 960  # the model's pixel area; every text-to-video size is scaled to it
    # Text-to-video size as the reference's `video_frame_height_width` = [height, width]: it gives the aspect
    # ratio, scaled to `area`. 0 = use aspect_ratio. Exactly H x W: set area=H*W too.
    height: int = 0
    width: int = 0
    aspect_ratio: list[int] = field(default_factory=lambda: [1, 1])  # [width, height] when height/width are 0
    # Video frames at 24 fps (121 -> 5.04 s, 241 -> 10.04 s); the audio length follows (see `geometry`).
    num_frames: int = 241

    # Sampling (the release's defaults, owned by ovi.sampling).
    solver: str = DEFAULT_SOLVER  # unipc | euler | dpm++
    num_steps: int = DEFAULT_NUM_STEPS
    shift: float = DEFAULT_SHIFT
    video_guidance_scale: float = DEFAULT_VIDEO_GUIDANCE
    audio_guidance_scale: float = DEFAULT_AUDIO_GUIDANCE
    slg_layer: int = DEFAULT_SLG_LAYER  # fusion block skipped on the negative branch; 0 or -1 disables it
    video_negative_prompt: str = DEFAULT_VIDEO_NEGATIVE_PROMPT
    audio_negative_prompt: str = DEFAULT_AUDIO_NEGATIVE_PROMPT
    seed: int = 103  # -1: a random seed (logged, and written into each output's metadata)

    # Devices and memory.
    device: str = "cuda"
    dtype: str = "bfloat16"  # compute dtype of the fusion model and text encoder: bfloat16 | float32
    cpu_offload: bool = False  # keep each model on the CPU except while it runs
    offload_blocks: int = 0  # > 0: fusion blocks stream from CPU, this many on the GPU at once (next one prefetched)
    text_encoder_device: str = ""  # e.g. "cpu": run UMT5 there (saves ~11 GB of GPU memory); empty: `device`
    # Fusion model weights: none | fp8 (per-tensor cast, no scale) | fp8_scaled (per-channel scales, fp8
    # matmuls on Hopper) | int8 (weight-only, per-channel): see ovi/models/quant.py. fp8_scaled/int8 need torchao.
    quantize: str = "none"
    attention_backend: str = "auto"  # auto | flash3 | flash2 | varlen | sdpa
    compile: bool = False  # torch.compile each block (first step compiles; same arithmetic)
    batch_cfg: bool = True  # both guidance branches in one forward; false: one at a time (less activation memory)
    step_cache: float = 0.0  # > 0: reuse the blocks' residual while the first block's changes less (not exact)
    # > 1: one clip's tokens split over this many processes (Ulysses; launch with torchrun, README "Several
    # GPUs"); the other processes' groups take other prompts. Heads (24) must divide by it.
    sp_size: int = 1
    vae_tiling: bool = False  # decode the video in overlapping 256-pixel tiles (seams blended; not bit-exact)
    vae_chunk_frames: int = 0  # > 0: decode this many latent frames at a time, each moved to the CPU (exact)

    # Inputs and outputs.
    prompt: str = ""
    image: str = ""  # first frame for image-to-video; empty for text-to-video
    # CSV/TSV: `prompt` (or the reference's `text_prompt`) and optional `image` (relative to the file) or
    # `image_path` (relative to the working directory, as the reference reads it).
    prompts_file: str = ""
    long_prompts: str = "warn"  # warn | error: a prompt over the model's text_len tokens is cut there
    num_samples: int = 1  # samples per prompt (seeds seed, seed+1, ...)
    output_dir: str = "outputs"
    overwrite: bool = False  # False: an existing output gets a new name (name-2.mp4), never replaced
    skip_existing: bool = False  # batch resume: a (prompt, seed) whose mp4 exists is not generated again
    save_wav: bool = False

    # Text -> image -> video: prompts without an image get a first frame from a diffusers text-to-image
    # pipeline (hub id or local folder; the reference uses black-forest-labs/FLUX.1-Krea-dev).
    t2i_model: str = ""
    t2i_area: int = 1024 * 1024  # the image is made at this area (sides multiples of 16), then sized as i2v
    t2i_steps: int = 28
    t2i_guidance_scale: float = 4.5  # the reference's value for FLUX.1

    # --- fine-tuned adapters and given media (issue 11; ovi/lora.py, ovi/modes.py) -----------------------
    # LoRA adapters loaded onto the model unmerged: "PATH[:SCALE]", several comma-separated.
    lora: str = ""
    # How given media (V2A video, A2V audio, an extension's prefix) condition the model: "noised" (zero-shot,
    # for the release: the given part is its ground truth noised to each step's level) or "clean" (t = 0 on
    # it, for weights fine-tuned in that mode). See ovi/modes.py.
    conditioning: str = "noised"
    # Given media (ovi/modes.py; at most one of these or `image`): `video` V2A (keep it, generate its audio),
    # `audio` A2V (keep it, generate the video), `extend` continue a clip from its last `extend_frames` latent
    # frames (0: a quarter of the clip's latent frames) and the audio over them.
    video: str = ""
    audio: str = ""
    extend: str = ""
    extend_frames: int = 0
    # After the joint pass, generate the sound again from the finished video (V2A with the video clean, same
    # seed and noise), so its events can follow the picture's; with checkpoints.v2a, on those weights. Only for
    # weights fine-tuned on clean-video batches (train objective.mode=v2a or v2a_prob); the release's were not.
    # Twice the denoising. Text and image prompts only (given media have no joint pass).
    audio_from_video: bool = False
    # Sync guidance (ovi/sync_guidance.py) of the stream made beside a whole given one (V2A, A2V, the
    # audio_from_video pass): v + scale * (v - v with the partner moved shift_s seconds in time). 0: off; > 0 costs
    # twice the model calls of that pass.
    sync_guidance_scale: float = 0.0
    sync_guidance_shift_s: float = 1.0

    @property
    def v2a_weights_used(self) -> bool:
        """``checkpoints.v2a`` is read: it is set and sound is made from a clean video here (the audio_from_video
        pass, or V2A with conditioning=clean)."""
        return bool(self.checkpoints.v2a) and (self.audio_from_video or self.conditioning == "clean")

    @property
    def geometry(self) -> ClipGeometry:
        """Clip lengths for ``num_frames``: latent frames, audio latents (121 -> 157, 241 -> 314), fps, rate."""
        return ClipGeometry.for_frames(self.num_frames)
