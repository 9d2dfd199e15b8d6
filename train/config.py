"""The trainer's structured config: one schema for all three stages (OVI §4.2-4.3).

YAML files under ``configs/train/`` are merged onto these dataclasses by ``ovi.config.load_config``, so a
misspelt key is an error. Values that define the paper's recipe (loss weights, learning rates, betas, clip
lengths) live in those YAML files; the defaults here are neutral.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import MISSING

from ovi.config import load_config
from ovi.geometry import FIVE_SECOND, SIZE_MULTIPLE, ClipGeometry
from ovi.lora import LoraSpec
from train.data.buckets import bucket_frames

STAGES = ("audio_pretrain", "audio_finetune", "fusion")
AUDIO_STAGES = ("audio_pretrain", "audio_finetune")


@dataclass
class InitConfig:
    """Where the weights come from. Paths are files or folders of safetensors (see train/model_init.py)."""

    # Wan2.2-TI2V-5B DiT as Wan releases it (folder with sharded safetensors + index, or one file),
    # or any file holding a video tower (a released Ovi file: its ``video_model.`` part is used).
    video_tower: Optional[str] = None
    # Stage-1/2 export (standalone audio tower), or an Ovi file (its ``audio_model.`` part).
    audio_tower: Optional[str] = None
    # A released Ovi fusion file: both towers *and* the cross-modal layers (fine-tuning the release).
    fusion: Optional[str] = None


@dataclass
class SigmaConfig:
    sampling: str = "uniform"  # "uniform" (paper) or "logit_normal"
    shift: float = 1.0  # sigma' = shift*s / (1 + (shift-1)*s), applied after sampling; 1 = no shift
    logit_mean: float = 0.0  # logit_normal only
    logit_std: float = 1.0
    # Fusion stage: with this probability a sample draws the audio's noise level independently of the video's
    # (0: the paper's one shared level). Under a shared level the partner is never cleaner than the tower's own
    # input, so a tower gains nothing by reading it (the toy world's audio tower learnt to ignore the video);
    # independent levels give it samples where the partner is the only clear source of event times.
    independent_prob: float = 0.0


@dataclass
class ObjectiveConfig:
    sigma: SigmaConfig = field(default_factory=SigmaConfig)
    # Fusion stage only (paper: 0.85 / 0.15); the audio stages train on the audio loss alone.
    loss_weight_video: Optional[float] = None
    loss_weight_audio: Optional[float] = None
    # Condition dropout to the null-prompt embedding, so classifier-free guidance works at sampling time.
    text_dropout_video: float = 0.1
    text_dropout_audio: float = 0.1
    text_dropout_joint: bool = False  # one draw drops both prompts (probability text_dropout_video)
    null_prompt: str = ""
    # Image-to-video: with this probability a batch keeps latent frame 0 clean (t=0 there, no loss on it).
    first_frame_clean_prob: float = 0.0
    # --- conditioning modes (issue 11; train/objective.py, train/strategies.py) -----------------------------------------------------
    # t2av | i2av (first latent frame clean with first_frame_clean_prob) | v2a (video clean, loss on audio) |
    # a2v (audio clean) | t2a (the fusion model's audio tower alone) | video_extension / audio_extension (a
    # clean prefix of `prefix_units` latent frames / audio latents). Clean tokens have t = 0 and no loss.
    mode: str = "t2av"
    prefix_units: int = 1  # extension modes only
    # t2av only: this share of the batches is a v2a batch (the whole video clean, the audio loss alone) whose
    # audio sigma is shifted by `v2a_sigma_shift` towards 1. At a shared level neither tower needs the other's
    # timing (each sees its own events down to sigma ~0.9); with a clean video and a nearly pure-noise audio,
    # the video is the only source of when, and the audio tower learns to read it (ovi/toy/README.md: with the
    # whole audio tower trainable; with its FFNs, time embedding and head frozen it did not).
    v2a_prob: float = 0.0
    v2a_sigma_shift: float = 1.0
    # > 0: each audio latent's squared error is weighted by 1 + this x its rise in mean level (the clean latent's
    # onset strength, normalised per clip; weights averaged to 1), so the few latents where a sound starts (the
    # part of the audio only the video can time) weigh more than the texture between them. 0: plain MSE.
    audio_onset_weight: float = 0.0
    # > 0: each video position's squared error is weighted by 1 + this x how much it changes between latent
    # frames (the clean latent's motion, normalised per clip; weights averaged to 1), so the few tokens where
    # something moves or flashes (a ball, a lamp, a mouth: the events the sound must meet) weigh more than the
    # still backdrop that fills most of a frame. 0: plain MSE.
    video_motion_weight: float = 0.0


@dataclass
class AudioClipConfig:
    # "fixed" (fine-tuning, fusion): the audio of data.video.num_frames frames, exactly the geometry's
    # audio_samples (121 -> 157 latents, 241 -> 314); "variable" (pretraining): up to `seconds`.
    mode: str = "fixed"
    seconds: Optional[float] = None  # variable mode only: the longest clip (paper: 12)
    min_seconds: float = 1.0  # shorter clips are skipped (variable mode, and fixed mode with pad_short)
    # Fixed mode: a clip shorter than the fixed length (but at least min_seconds) is zero-padded to it with the
    # padding outside the loss (as OVI trains; train/data/buckets.py pad_audio) instead of being skipped. Off by
    # default so existing datasets and runs see the same samples; the release fine-tuning configs turn it on.
    pad_short: bool = False


@dataclass
class VideoClipConfig:
    # 5.04 s at 24 fps -> 31 latent frames; also sets fixed-length audio (157 latents), in audio fine-tuning too.
    num_frames: int = FIVE_SECOND.num_frames
    height: Optional[int] = None  # resize + centre-crop to this size; None keeps the shard's size
    width: Optional[int] = None


@dataclass
class BucketConfig:
    """Aspect-ratio / duration buckets (train/data/buckets.py; fusion only). area 0 = off: every clip is resized
    and centre-cropped to data.video.height x width and batches mix latent shapes as before."""

    # Pixels per frame: each clip is resized to its own aspect ratio at about this area, sides multiples of 32,
    # and a batch holds one bucket (one shape). 720*720 = 518,400 (720x720_5s release); 960*960 = 921,600 (960s).
    area: int = 0
    # Clip lengths in frames (each 1 + 4k); a clip takes the longest that fits. Empty: [data.video.num_frames].
    frames: list[int] = field(default_factory=list)


@dataclass
class DataConfig:
    source: str = "precomputed"  # "precomputed" (train/precompute.py output) or "raw" (mp4/wav shards)
    shards: list[str] = MISSING  # dataset folders (each with shards/index.json)
    weights: Optional[list[float]] = None  # mixing weight per dataset; default: by sample count
    batch_size: int = 1  # per rank, per micro-step
    interleave: int = 4  # shards each rank reads from at once (mixing)
    bucket_batches: int = 8  # batches sorted by length together, to cut padding
    decode_workers: int = 2  # threads decoding samples ahead of the trainer
    prefetch_samples: int = 16
    # Corrupt samples and unreadable shards are skipped, logged (file + member) and counted; a rank that skips
    # more than this many stops the run (a broken dataset, not a few bad files).
    max_bad_samples: int = 100
    video: VideoClipConfig = field(default_factory=VideoClipConfig)
    audio: AudioClipConfig = field(default_factory=AudioClipConfig)
    buckets: BucketConfig = field(default_factory=BucketConfig)

    @property
    def bucket_frames(self) -> list[int]:
        """Allowed clip lengths with buckets on (the longest is ``video.num_frames``)."""
        return list(self.buckets.frames) or [self.video.num_frames]

    @property
    def geometry(self) -> ClipGeometry:
        """The clip of ``video.num_frames`` frames; fixed-length audio takes its ``audio_samples``."""
        return ClipGeometry.for_frames(self.video.num_frames)


@dataclass
class EncodersConfig:
    """Only for ``data.source: raw`` and ``train.precompute``."""

    kind: str = "ovi"  # "ovi" (the released codecs) or "random" (tiny fixed projections, tests and benchmarks)
    video_vae: Optional[str] = None  # Wan2.2_VAE.pth
    audio_vae: Optional[str] = None  # MMAudio v1-16.pth
    text_encoder: Optional[str] = None  # models_t5_umt5-xxl-enc-bf16.pth
    tokenizer: Optional[str] = None  # google/umt5-xxl tokenizer folder
    dtype: str = "bf16"
    seed: int = 0  # "random" kind only


@dataclass
class OptimConfig:
    lr: float = MISSING  # paper: 1e-4 (audio stages), 5e-5 (fusion)
    betas: list[float] = MISSING  # paper: [0.9, 0.999] (audio), [0.9, 0.95] (fusion)
    eps: float = 1e-8
    weight_decay: float = 0.0  # applied to matrices only
    warmup_steps: int = 0
    schedule: str = "constant"  # after warm-up: "constant", "cosine" or "linear" decay to min_lr_ratio*lr
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # global L2 norm; 0 disables
    fused: bool = False  # torch's fused AdamW kernel (GPU)


@dataclass
class EngineConfig:
    deepspeed_config: str = "configs/train/deepspeed/zero2.json"
    gradient_accumulation_steps: int = 1
    precision: str = "bf16"  # "bf16" (DeepSpeed bf16: bf16 weights, fp32 master copy) or "fp32"
    activation_checkpointing: bool = True  # recompute each block in backward
    dist_backend: str = "auto"  # nccl on GPU, gloo on CPU
    # DeepSpeed's CPU accelerator JIT-builds a shared-memory allreduce (~80 s) on first use; plain gloo
    # collectives are enough for CPU tests.
    cpu_shm_comm: bool = False
    # Gradient reduce-scatter/all-reduce and accumulation dtype under bf16. DeepSpeed's default ("bf16") halves
    # gradient memory and traffic; "fp32" adds 2 bytes/trainable parameter of gradient memory and doubles the
    # reduction traffic, in exchange for exact-to-fp32 sums over ranks and micro-batches.
    grad_reduce_dtype: str = "bf16"
    # Steps whose loss is non-finite on some rank are counted and logged; more than this many stop the run.
    max_nonfinite_steps: int = 20
    # Sequence parallelism (ovi/parallel): each sample's tokens split over this many consecutive ranks (an SP
    # group, which reads one data slot); ZeRO still partitions over all ranks. Must divide the world size and
    # the heads. Checkpoints do not depend on it (resume with another sp_size; see train/README.md).
    sp_size: int = 1


@dataclass
class CheckpointConfig:
    dir: Optional[str] = None  # default: {run_dir}/checkpoints
    every_steps: int = 1000
    keep_last: int = 2
    resume: bool = True  # continue from the latest complete checkpoint in `dir` if there is one
    export_on_finish: bool = True  # write {run_dir}/export/model.safetensors at the end
    export_dtype: str = "bf16"
    # False: frozen parameters are left out of checkpoints (they never change); resume and export take them from
    # the init.* files again, so those files must stay where they are.
    save_frozen: bool = True
    # The run-folder lock (run_dir/.lock) is stale when its owner's pid is gone (same host) or it was not
    # refreshed for this long (another host).
    lock_stale_s: float = 600.0


@dataclass
class LoggingConfig:
    every_steps: int = 10
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "ovi"
    wandb_run_name: Optional[str] = None
    # Dense bf16 peak per device for the MFU estimate; 0 = look the GPU up (unknown devices: no MFU).
    peak_tflops: float = 0.0


@dataclass
class DebugConfig:
    """Fault injection for the resume test: SIGKILL rank 0 after every rank wrote checkpoint N and before it is
    committed, so the run dies between steps with a half-saved checkpoint on disk."""

    kill_in_save_at_step: Optional[int] = None


@dataclass
class EvaluationConfig:
    """In-loop evaluation (train/evaluation.py); off by default: it costs a generation per prompt."""

    enabled: bool = False
    every_steps: int = 500
    # Samples: an inference YAML (codecs, text encoder, sampler; e.g. configs/inference/tiny_cpu.yaml) + prompts.
    inference: Optional[str] = None
    inference_overrides: list[str] = field(default_factory=list)  # key=value on it, e.g. checkpoints.root=DIR
    prompts: list[str] = field(default_factory=list)
    seed: int = 0
    metrics: list[str] = field(default_factory=lambda: ["toy"])  # ovi-eval metric names
    weights: dict[str, str] = field(default_factory=dict)  # ovi-eval weight name -> path
    # Held-out loss on fixed samples of these shards, at these sigmas.
    validation_shards: list[str] = field(default_factory=list)
    validation_samples: int = 4
    validation_sigmas: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])


@dataclass
class EmaConfig:
    """Exponential moving average of the trainable weights (train/ema.py), kept in fp32 and checkpointed."""

    decay: float = 0.0  # 0 disables it; e.g. 0.999
    export: bool = False  # export the EMA weights instead of the raw ones


@dataclass
class TrainConfig:
    stage: str = MISSING  # audio_pretrain | audio_finetune | fusion
    model: str = MISSING  # model YAML (configs/model/*.yaml); audio stages use its `audio` tower
    run_dir: str = MISSING
    max_steps: int = MISSING  # optimizer steps
    seed: int = 0
    # fnmatch patterns over parameter names (as in the state dict). A parameter trains if it matches one of
    # `trainable` and none of `frozen`; a pattern that matches nothing is an error.
    trainable: list[str] = field(default_factory=lambda: ["*"])
    frozen: list[str] = field(default_factory=list)
    init: InitConfig = field(default_factory=InitConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    # --- fine-tuning (issue 11): LoRA adapters (ovi/lora.py; rank 0 = none) and EMA -------------------------
    lora: LoraSpec = field(default_factory=LoraSpec)
    ema: EmaConfig = field(default_factory=EmaConfig)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoint.dir) if self.checkpoint.dir else Path(self.run_dir) / "checkpoints"

    @property
    def has_video(self) -> bool:
        return self.stage == "fusion"


def _one_of(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Cross-field checks the schema cannot express. Raises ValueError naming the key to fix."""
    _one_of("stage", cfg.stage, STAGES)
    _one_of("data.source", cfg.data.source, ("precomputed", "raw"))
    _one_of("data.audio.mode", cfg.data.audio.mode, ("fixed", "variable"))
    _one_of("objective.sigma.sampling", cfg.objective.sigma.sampling, ("uniform", "logit_normal"))
    _one_of("optim.schedule", cfg.optim.schedule, ("constant", "cosine", "linear"))
    _one_of("engine.precision", cfg.engine.precision, ("bf16", "fp32"))
    _one_of("encoders.kind", cfg.encoders.kind, ("ovi", "random"))
    _one_of("checkpoint.export_dtype", cfg.checkpoint.export_dtype, ("bf16", "fp32"))
    _one_of("engine.grad_reduce_dtype", cfg.engine.grad_reduce_dtype, ("bf16", "fp32"))
    for name in ("text_dropout_video", "text_dropout_audio", "first_frame_clean_prob"):
        _probability(f"objective.{name}", getattr(cfg.objective, name))
    _probability("objective.sigma.independent_prob", cfg.objective.sigma.independent_prob)
    _probability("objective.v2a_prob", cfg.objective.v2a_prob)
    if cfg.objective.v2a_prob > 0 and cfg.objective.mode != "t2av":
        raise ValueError(f"objective.v2a_prob mixes v2a batches into t2av training; mode is {cfg.objective.mode!r}")
    if cfg.objective.v2a_sigma_shift <= 0:
        raise ValueError(f"objective.v2a_sigma_shift must be > 0, got {cfg.objective.v2a_sigma_shift}")
    for name in ("audio_onset_weight", "video_motion_weight"):
        if getattr(cfg.objective, name) < 0:
            raise ValueError(f"objective.{name} must be >= 0 (0: plain MSE), got {getattr(cfg.objective, name)}")
    if cfg.stage == "fusion" and None in (cfg.objective.loss_weight_video, cfg.objective.loss_weight_audio):
        raise ValueError("fusion needs objective.loss_weight_video and loss_weight_audio (paper: 0.85 / 0.15)")
    if cfg.objective.sigma.shift <= 0:
        raise ValueError(f"objective.sigma.shift must be > 0, got {cfg.objective.sigma.shift}")
    if len(cfg.optim.betas) != 2:
        raise ValueError(f"optim.betas needs two values, got {cfg.optim.betas}")
    if cfg.max_steps < 1 or cfg.data.batch_size < 1 or cfg.engine.gradient_accumulation_steps < 1:
        raise ValueError("max_steps, data.batch_size and engine.gradient_accumulation_steps must be >= 1")
    for name in ("checkpoint", "logging", "evaluation"):  # a modulus: 0 would fail mid-run, not here
        if getattr(cfg, name).every_steps < 1:
            raise ValueError(f"{name}.every_steps must be >= 1, got {getattr(cfg, name).every_steps}"
                             + (" (evaluation.enabled=false turns it off)" if name == "evaluation" else ""))
    if cfg.data.max_bad_samples < 0 or cfg.engine.max_nonfinite_steps < 0:
        raise ValueError("data.max_bad_samples and engine.max_nonfinite_steps must be >= 0")
    if not cfg.checkpoint.save_frozen and cfg.stage == "audio_pretrain" and not cfg.init.audio_tower and cfg.frozen:
        raise ValueError("checkpoint.save_frozen=false needs the frozen weights in an init.* file; audio_pretrain "
                         "from scratch has none: set checkpoint.save_frozen=true")
    if cfg.data.weights is not None and len(cfg.data.weights) != len(cfg.data.shards):
        raise ValueError(f"data.weights has {len(cfg.data.weights)} values for {len(cfg.data.shards)} data.shards")
    if cfg.stage in AUDIO_STAGES and cfg.init.video_tower:
        raise ValueError(f"init.video_tower is only used by the fusion stage (stage is {cfg.stage})")
    if cfg.init.fusion and (cfg.init.video_tower or cfg.init.audio_tower):
        raise ValueError("init.fusion loads both towers; leave init.video_tower / init.audio_tower unset")
    if cfg.stage in AUDIO_STAGES and cfg.init.fusion:
        raise ValueError("audio stages take the audio part of an Ovi file via init.audio_tower, not init.fusion")
    _check_clip(cfg.data, cfg.has_video)
    _check_finetuning(cfg)
    return cfg


TRAIN_MODES = ("t2av", "i2av", "v2a", "a2v", "t2a", "video_extension", "audio_extension")


def _check_finetuning(cfg: TrainConfig) -> None:
    """Conditioning modes, LoRA and EMA (issue 11)."""
    _one_of("objective.mode", cfg.objective.mode, TRAIN_MODES)
    if cfg.stage in AUDIO_STAGES and cfg.objective.mode not in ("t2av", "t2a"):
        raise ValueError(f"objective.mode={cfg.objective.mode} needs stage=fusion (the audio stages are t2a)")
    if cfg.objective.mode == "i2av" and cfg.objective.first_frame_clean_prob == 0:
        raise ValueError("objective.mode=i2av needs objective.first_frame_clean_prob > 0 (e.g. 0.9)")
    if cfg.objective.prefix_units < 1:
        raise ValueError(f"objective.prefix_units must be >= 1, got {cfg.objective.prefix_units}")
    if not 0.0 <= cfg.ema.decay < 1.0:
        raise ValueError(f"ema.decay must be in [0, 1) (0 disables EMA), got {cfg.ema.decay}")
    if cfg.ema.export and not cfg.ema.decay:
        raise ValueError("ema.export=true needs ema.decay > 0")


def _check_clip(data: DataConfig, has_video: bool) -> None:
    a, v = data.audio, data.video
    for side in (v.height, v.width):
        if side is not None and side % SIZE_MULTIPLE:
            raise ValueError(f"data.video height/width must be multiples of {SIZE_MULTIPLE}, got {side}")
    if v.num_frames < 1:
        raise ValueError(f"data.video.num_frames must be >= 1, got {v.num_frames}")
    if a.mode == "variable" and has_video:
        raise ValueError("data.audio.mode=variable is for audio-only stages; fusion clips are fixed-length")
    if a.mode == "variable" and (a.seconds is None or a.seconds < a.min_seconds):
        raise ValueError(f"data.audio.mode=variable needs data.audio.seconds >= min_seconds ({a.min_seconds}), "
                         f"got {a.seconds}")
    _check_buckets(data, has_video)
    if a.mode == "fixed" and a.seconds is not None:
        raise ValueError(
            f"data.audio.seconds={a.seconds} is for mode=variable; fixed-length audio follows data.video.num_frames "
            "(121 frames -> 157 latents, 241 -> 314): remove data.audio.seconds and set data.video.num_frames"
        )


def _check_buckets(data: DataConfig, has_video: bool) -> None:
    b, v = data.buckets, data.video
    if not b.area:
        if b.frames:
            raise ValueError("data.buckets.frames needs data.buckets.area > 0 (e.g. 518400 = 720x720)")
        return
    if b.area < SIZE_MULTIPLE**2:
        raise ValueError(f"data.buckets.area must be >= {SIZE_MULTIPLE**2} pixels (or 0 = off), got {b.area}")
    if not has_video:
        raise ValueError("data.buckets is for stage=fusion (video clips); remove it for the audio stages")
    if v.height is not None or v.width is not None:
        raise ValueError("data.buckets.area sets each clip's size from its aspect ratio: remove data.video.height "
                         "and width (or set data.buckets.area=0 for one fixed size)")
    bucket_frames(v.num_frames, data.bucket_frames)  # raises unless each is 1 + 4k
    if max(data.bucket_frames) != v.num_frames:
        raise ValueError(f"the longest of data.buckets.frames {list(data.bucket_frames)} must equal "
                         f"data.video.num_frames={v.num_frames} (the length the checkpoint records)")


def load_train_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    return validate(load_config(TrainConfig, path, overrides))
