"""Typed config of the data pipeline: one dataclass section per stage, loaded with ``ovi.config.load_config``.

The paper's numbers (720x720, -60 dB, |offset| <= 3, conf > 1.5) live here as named constants and defaults;
the clip geometry (121 frames at 24 fps, 16 kHz mono, sides in multiples of 32) is ``ovi.geometry``'s.
``configs/data/default.yaml`` states them again for the reader.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ovi.config import load_config
from ovi.geometry import FIVE_SECOND, FPS, SAMPLE_RATE, SIZE_MULTIPLE

# Ovi filters and packs at a pixel area of 720x720 (sides snapped to ovi.geometry.SIZE_MULTIPLE).
PAPER_MIN_SIDE = 720
PAPER_TARGET_AREA_SIDE = 720
# Clips quieter than this mean volume (dBFS, RMS based like ffmpeg's volumedetect) count as silent.
PAPER_MIN_MEAN_VOLUME_DB = -60.0
# SyncNet decision rule of the paper (offsets are in SyncNet's own 25 fps frames).
PAPER_SYNC_MAX_ABS_OFFSET = 3
PAPER_SYNC_MIN_CONFIDENCE = 1.5
SYNCNET_FPS = 25
# The MLLM sees this many evenly spaced frames of a clip.
CAPTION_NUM_FRAMES = 7
# Stage-1 (audio-only) clip lengths: up to 12 s for pretraining, exactly 5.04 s for fine-tuning.
AUDIO_PRETRAIN_MAX_S = 12.0
# 80,640 samples, at least FIVE_SECOND.audio_samples (80,384): each clip gives the 157 latents training takes.
AUDIO_FINETUNE_S = 5.04

VIDEO_STAGES = ("probe", "split", "filter", "sync", "caption", "pack")
AUDIO_STAGES = ("probe", "audio_split", "filter", "caption", "pack")


def resolve_device(device: str) -> str:
    """``auto`` -> "cuda" when this worker sees a GPU (a Ray actor with num_gpus does), else "cpu"."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Resources:
    """What one worker of a stage needs; the local engine uses ``workers``, Ray uses all three."""

    workers: Optional[int] = None  # None: engine.workers
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class ProbeConfig:
    resources: Resources = field(default_factory=Resources)
    # "reject": a source without an audio stream is rejected; "silence": it goes on with a silent track
    # (the volume filter will then drop it unless min_mean_volume_db is disabled).
    on_missing_audio: str = "reject"
    # Decode the whole file to catch truncated/corrupt streams up front (costs one full decode per source).
    # Without it a truncated file is still split; clips that run past the decodable end are rejected.
    verify_decode: bool = False
    extensions: list[str] = field(
        default_factory=lambda: [".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".ts", ".mts", ".m2ts", ".flv",
                                 ".wmv", ".3gp", ".mpg", ".mpeg", ".wav", ".flac", ".mp3", ".m4a"]
    )

    def __post_init__(self) -> None:
        if self.on_missing_audio not in ("reject", "silence"):
            raise ValueError(f"probe.on_missing_audio must be 'reject' or 'silence', got {self.on_missing_audio!r}")


@dataclass
class SplitConfig:
    resources: Resources = field(default_factory=Resources)
    num_frames: int = FIVE_SECOND.num_frames  # the clip the fusion model is trained on
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE
    scene_threshold: float = 27.0  # PySceneDetect ContentDetector threshold
    min_scene_frames: int = 15  # at `fps`
    analysis_width: int = 256  # scene detection runs on frames scaled to this width
    # Frames kept clear of each cut: the fps resampler may pick a source frame up to half a frame away.
    cut_margin_frames: int = 2
    max_clips_per_scene: int = 0  # 0: as many back-to-back clips as fit
    # Encode once: split crops the black margins, resizes to the packed size (ovi.imaging) and encodes with
    # pack.crf/pack.preset, so pack only muxes the audio in (video stream copy). False: split keeps a
    # near-lossless source-size intermediate that pack re-encodes (always so for pack.video_member=npy,
    # whose frames must be the exact resize, not an h264 round trip).
    final_size: bool = True
    crf: int = 16  # the source-size intermediate (final_size false) is re-encoded in pack: near-lossless
    preset: str = "veryfast"


@dataclass
class MotionConfig:
    enabled: bool = True
    raft_weights: str = ""  # torchvision RAFT state dict; empty: OpenCV Farneback
    raft_variant: str = "raft_large"  # or raft_small
    device: str = "auto"  # "auto": the GPU Ray (or CUDA_VISIBLE_DEVICES) gave this worker, else the CPU
    num_pairs: int = 8  # evenly spaced frame pairs per clip
    pair_gap_frames: int = 2
    analysis_width: int = 256
    # The score is the mean flow of the busiest of regions x regions cells (1: the whole-frame mean), in percent
    # of the frame diagonal per frame; below min_score a clip counts as static (calibration: filters/motion.py).
    regions: int = 8
    min_score: float = 0.1


@dataclass
class AestheticConfig:
    enabled: bool = True  # on by default: the run refuses to start without the weights unless this is false
    clip_model: str = ""  # a transformers CLIP vision-with-projection folder (ViT-L/14 for the LAION head)
    predictor_weights: str = ""  # LAION aesthetic predictor MLP state dict (sac+logos+ava1-l14-linearMSE.pth)
    device: str = "auto"  # "auto": the GPU Ray (or CUDA_VISIBLE_DEVICES) gave this worker, else the CPU
    num_frames: int = 3
    min_score: float = 4.5


@dataclass
class FaceConfig:
    enabled: bool = True  # on by default: the run refuses to start without the weights unless this is false
    s3fd_weights: str = ""  # sfd_face.pth, the same file the sync stage uses
    device: str = "auto"  # "auto": the GPU Ray (or CUDA_VISIBLE_DEVICES) gave this worker, else the CPU
    num_frames: int = 5
    detect_scale: float = 0.5
    confidence: float = 0.9
    # Deterministic subsampling per face category (by clip-id hash) to balance the mix.
    keep_fraction_none: float = 1.0
    keep_fraction_single: float = 1.0
    keep_fraction_multi: float = 1.0


@dataclass
class FilterConfig:
    resources: Resources = field(default_factory=Resources)
    min_width: int = PAPER_MIN_SIDE
    min_height: int = PAPER_MIN_SIDE
    min_mean_volume_db: Optional[float] = PAPER_MIN_MEAN_VOLUME_DB  # None disables the check
    motion: MotionConfig = field(default_factory=MotionConfig)
    aesthetic: AestheticConfig = field(default_factory=AestheticConfig)
    face: FaceConfig = field(default_factory=FaceConfig)


@dataclass
class SyncConfig:
    resources: Resources = field(default_factory=Resources)
    enabled: bool = True  # on by default: the run refuses to start without the weights unless this is false
    s3fd_weights: str = ""
    syncnet_weights: str = ""
    device: str = "auto"  # "auto": the GPU Ray (or CUDA_VISIBLE_DEVICES) gave this worker, else the CPU
    max_abs_offset: int = PAPER_SYNC_MAX_ABS_OFFSET  # in 25 fps SyncNet frames
    min_confidence: float = PAPER_SYNC_MIN_CONFIDENCE
    # "reject": reason no_face_track; "keep": passed for non-speech data, with sync_status "no_face_track" in
    # the sample's metadata so a trainer can tell it was never sync-checked.
    on_no_face_track: str = "reject"
    # syncnet-python pipeline knobs; its defaults suit 720p faces, lower them for small test videos.
    min_face_size: int = 100
    min_track: int = 50
    facedet_scale: float = 0.25

    def __post_init__(self) -> None:
        if self.on_no_face_track not in ("keep", "reject"):
            raise ValueError(f"sync.on_no_face_track must be 'keep' or 'reject', got {self.on_no_face_track!r}")


@dataclass
class CaptionConfig:
    resources: Resources = field(default_factory=Resources)
    # "openai" (any OpenAI-compatible server, e.g. vLLM), "transformers", or "sidecar" (the caption stored in
    # {source stem}.json next to each source video, as ovi-toy writes it)
    backend: str = "openai"
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"  # name of the env variable holding the key (may be unset for vLLM)
    model: str = "Qwen/Qwen2.5-Omni-7B"  # served model name, or a local folder for "transformers"
    # How audio is attached: "input_audio" (OpenAI format) or "audio_url" (data URL, also read by vLLM).
    audio_part: str = "input_audio"
    num_frames: int = CAPTION_NUM_FRAMES
    frame_max_side: int = 448
    max_tokens: int = 512
    temperature: float = 0.2
    timeout_s: float = 120.0
    max_attempts: int = 3  # malformed captions are asked for again, then the clip is rejected
    # Reject captions with <S>...<E> speech when a voice-activity check finds no speech in the clip's audio.
    check_speech: bool = True
    # transformers backend: the class that loads `model` (a local folder) and where it runs.
    model_class: str = "Qwen2_5OmniThinkerForConditionalGeneration"
    device: str = "auto"  # "auto": the GPU Ray (or CUDA_VISIBLE_DEVICES) gave this worker, else the CPU
    dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        if self.backend not in ("openai", "transformers", "sidecar"):
            raise ValueError(f"caption.backend must be 'openai', 'transformers' or 'sidecar', got {self.backend!r}")
        if self.audio_part not in ("input_audio", "audio_url"):
            raise ValueError(f"caption.audio_part must be 'input_audio' or 'audio_url', got {self.audio_part!r}")


@dataclass
class PackConfig:
    resources: Resources = field(default_factory=Resources)
    target_area_side: int = PAPER_TARGET_AREA_SIDE  # output area is this squared
    side_multiple: int = SIZE_MULTIPLE
    black_threshold: int = 24  # cropdetect luma limit (0-255): darker border rows/columns are cropped
    video_member: str = "mp4"  # "mp4" or "npy" (uint8 frames [T, H, W, 3])
    mux_audio: bool = True  # also put the audio (AAC) into the mp4, for viewing; the wav stays the truth
    crf: int = 18
    preset: str = "medium"
    shard_prefix: str = "ovi"
    samples_per_shard: int = 1000
    max_shard_bytes: int = 2 * 1024**3

    def __post_init__(self) -> None:
        if self.video_member not in ("mp4", "npy"):
            raise ValueError(f"pack.video_member must be 'mp4' or 'npy', got {self.video_member!r}")
        if "." in self.shard_prefix or "/" in self.shard_prefix:
            raise ValueError(f"pack.shard_prefix must not contain '.' or '/', got {self.shard_prefix!r}")


@dataclass
class AudioSplitConfig:
    resources: Resources = field(default_factory=Resources)
    # "pretrain": clips of min_s..max_s cut at the quietest point; "finetune": clips of exactly finetune_s.
    purpose: str = "pretrain"
    max_s: float = AUDIO_PRETRAIN_MAX_S
    min_s: float = 2.0
    finetune_s: float = AUDIO_FINETUNE_S
    sample_rate: int = SAMPLE_RATE
    quiet_window_s: float = 0.02  # energy window used to find the quietest cut point

    def __post_init__(self) -> None:
        if self.purpose not in ("pretrain", "finetune"):
            raise ValueError(f"audio_split.purpose must be 'pretrain' or 'finetune', got {self.purpose!r}")


@dataclass
class EngineConfig:
    name: str = "local"  # "local" (process pool) or "ray"
    workers: int = 0  # 0: os.cpu_count()
    ray_address: str = ""  # empty: local Ray instance (or the one already initialised)
    # Inputs whose processing raised (rejected as error:<type>) that this run tolerates before it stops;
    # a negative value means no ceiling.
    max_errors: int = 100

    def __post_init__(self) -> None:
        if self.name not in ("local", "ray"):
            raise ValueError(f"engine.name must be 'local' or 'ray', got {self.name!r}")


@dataclass
class DataPipelineConfig:
    input: str = ""  # folder, text file with one path/URL per line, or fsspec URL (s3://bucket/prefix)
    output: str = ""
    mode: str = "video"  # "video": audio+video clips; "audio": stage-1 audio-only clips
    stages: list[str] = field(default_factory=list)  # empty: all stages of the mode, in order
    engine: EngineConfig = field(default_factory=EngineConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    audio_split: AudioSplitConfig = field(default_factory=AudioSplitConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    # Keep clips/ and packed/ after their clip is rejected or written to a shard (for debugging and tests).
    keep_intermediates: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("video", "audio"):
            raise ValueError(f"mode must be 'video' or 'audio', got {self.mode!r}")
        allowed = VIDEO_STAGES if self.mode == "video" else AUDIO_STAGES
        unknown = [s for s in self.stages if s not in allowed]
        if unknown:
            raise ValueError(f"stages {unknown} are not {self.mode}-mode stages; choose from {list(allowed)}")

    @property
    def encode_once(self) -> bool:
        """Whether split writes clips at their final size (see SplitConfig.final_size)."""
        return self.mode == "video" and self.split.final_size and self.pack.video_member == "mp4"

    @property
    def stage_names(self) -> tuple[str, ...]:
        allowed = VIDEO_STAGES if self.mode == "video" else AUDIO_STAGES
        # Keep pipeline order whatever order the user listed them in.
        return tuple(s for s in allowed if not self.stages or s in self.stages)


def load_data_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> DataPipelineConfig:
    """Schema defaults <- YAML at ``path`` <- ``key=value`` overrides (misspelt keys are errors)."""
    return load_config(DataPipelineConfig, path, overrides)
