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
    rope_temporal_scale: float = 1.0  # audio: AUDIO_ROPE_SCALE_RELEASED

    def __post_init__(self) -> None:
        if self.modality not in ("video", "audio", MISSING):
            raise ValueError(f"tower modality must be 'video' or 'audio', got {self.modality!r}")


@dataclass
class FusionConfig:
    """The twin-tower fusion model: one video and one audio tower with the same depth."""

    video: TowerConfig = field(default_factory=lambda: TowerConfig(modality="video"))
    audio: TowerConfig = field(default_factory=lambda: TowerConfig(modality="audio"))

    def __post_init__(self) -> None:
        if self.video.num_layers != self.audio.num_layers and MISSING not in (
            self.video.num_layers,
            self.audio.num_layers,
        ):
            raise ValueError("video and audio towers must have the same num_layers (they fuse block by block)")


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
class CheckpointPaths:
    """Release files, relative to ``root`` unless absolute (``ovi-download`` lays them out like this)."""

    root: str = "checkpoints"
    fusion: str = "Ovi/model_960x960_10s.safetensors"
    video_vae: str = "Wan2.2-TI2V-5B/Wan2.2_VAE.pth"
    text_encoder: str = "Wan2.2-TI2V-5B/models_t5_umt5-xxl-enc-bf16.pth"
    tokenizer: str = "Wan2.2-TI2V-5B/google/umt5-xxl"
    audio_vae: str = "MMAudio/ext_weights/v1-16.pth"
    vocoder: str = "MMAudio/ext_weights/best_netG.pt"

    def resolve(self, name: str) -> Path:
        p = Path(getattr(self, name))
        return p if p.is_absolute() else Path(self.root) / p


@dataclass
class InferenceConfig:
    """Everything ``ovi-generate`` needs; presets live in configs/inference/."""

    model: str = "configs/model/ovi_11b.yaml"  # fusion model config (YAML path)
    variant: str = "960x960_10s"  # 720x720_5s | 960x960_5s | 960x960_10s: prompt style of that checkpoint
    checkpoints: CheckpointPaths = field(default_factory=CheckpointPaths)
    random_weights: bool = False  # tiny random components, no files: a CPU smoke run (output is noise)

    # Shape of what is generated.
    area: int = 960 * 960  # pixel area; height/width follow the aspect ratio, snapped to multiples of 32
    aspect_ratio: list[int] = field(default_factory=lambda: [1, 1])  # [width, height]; i2v uses the image's
    num_frames: int = 241  # 24 fps: 121 -> 5.04 s, 241 -> 10.04 s
    audio_latents: int = 314  # MMAudio latents (31.25 per second): 157 for 5 s, 314 for 10 s
    fps: int = 24
    sample_rate: int = 16000

    # Sampling (the release's defaults).
    solver: str = "unipc"  # unipc | euler | dpm++
    num_steps: int = 50
    shift: float = 5.0
    video_guidance_scale: float = 4.0
    audio_guidance_scale: float = 3.0
    slg_layer: int = 11  # fusion block skipped on the negative branch; 0 disables skip-layer guidance
    video_negative_prompt: str = "jitter, bad hands, blur, distortion"
    audio_negative_prompt: str = "robotic, muffled, echo, distorted"
    seed: int = 103

    # Devices and memory.
    device: str = "cuda"
    dtype: str = "bfloat16"  # compute dtype of the fusion model and text encoder: bfloat16 | float32
    cpu_offload: bool = False  # keep each model on the CPU except while it runs
    fp8: bool = False  # store the fusion model's linear weights in float8 e4m3fn (upcast per layer)
    attention_backend: str = "auto"  # auto | flash3 | flash2 | sdpa

    # Inputs and outputs.
    prompt: str = ""
    image: str = ""  # first frame for image-to-video; empty for text-to-video
    prompts_file: str = ""  # CSV/TSV with a `prompt` column and an optional `image` column
    num_samples: int = 1  # samples per prompt (seeds seed, seed+1, ...)
    output_dir: str = "outputs"
    save_wav: bool = False
