"""The joint denoising loop, and the release's guidance as a velocity function.

The loop (:func:`sample`) knows only a velocity function ``(x_v, x_a, t) -> (v_v, v_a)`` and two solvers, one
per modality; it integrates from noise to data and keeps a clean video prefix (the image-to-video first frame)
in place before every call and after the last step. What the velocity is (one model call, classifier-free
guidance, skip-layer guidance, a distilled one-call model) is the caller's closure.

:func:`guided_velocity` is the release's guidance: per step the positive branch (the prompt's text for both
towers) and the negative branch (each tower's own negative prompt, fusion block ``slg_layer`` skipped), combined
as ``neg + scale * (pos - neg)`` per modality in the latents' dtype. The text MLP outputs, every block's text
keys/values and the rotary tables do not change between steps, so they are computed once per generation.
By default both branches run as one batched forward (rows: positive, negative; the SLG block is skipped for
the negative row only; the shared latents are patch-embedded once and block 0's text-free work runs once);
``SpeedConfig(batch_cfg=False)`` runs them one after the other, for half the activation memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from ovi.models.cache import StepCache
from ovi.models.fusion import FusionModel
from ovi.models.rope import RotaryTable
from ovi.models.stream import PreparedText, Stream, clean_prefix_timesteps
from ovi.sampling import (
    DEFAULT_AUDIO_GUIDANCE,
    DEFAULT_NUM_STEPS,
    DEFAULT_SHIFT,
    DEFAULT_SLG_LAYER,
    DEFAULT_SOLVER,
    DEFAULT_VIDEO_GUIDANCE,
    guidance,
    make_samplers,
)

# (video latent [C, F, H, W], audio latent [L, C], t [1]) -> (video velocity, audio velocity), same shapes.
VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Conditioning:
    """Text embeddings [L_i, text_dim] of the prompt and the two negative prompts."""

    positive: torch.Tensor
    video_negative: torch.Tensor
    audio_negative: torch.Tensor


@dataclass
class GuidanceConfig:
    """Solver and guidance of one generation; the defaults are the release's (owned by ``ovi.sampling``)."""

    solver: str = DEFAULT_SOLVER
    num_steps: int = DEFAULT_NUM_STEPS
    shift: float = DEFAULT_SHIFT
    video_scale: float = DEFAULT_VIDEO_GUIDANCE
    audio_scale: float = DEFAULT_AUDIO_GUIDANCE
    slg_layer: int = DEFAULT_SLG_LAYER  # 0: no skip-layer guidance


@dataclass
class SpeedConfig:
    """How the guided velocity is computed; the default is exact (equal to the naive path to float rounding)."""

    batch_cfg: bool = True  # positive + negative branch in one forward (twice the activations of one branch)
    cache_text_kv: bool = True  # project each block's text K/V once per generation instead of every step
    step_cache: float = 0.0  # > 0: step caching threshold (ovi.models.cache; not exact); 0 disables it

    def __post_init__(self) -> None:
        if self.step_cache < 0:
            raise ValueError(f"step_cache threshold must be >= 0 (0 disables it), got {self.step_cache}")


def sample(
    velocity: VelocityFn,
    video_noise: torch.Tensor,
    audio_noise: torch.Tensor,
    solver: str,
    num_steps: int,
    shift: float,
    video_prefix: torch.Tensor | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise -> clean latents along the solver's schedule. ``video_prefix`` [C, k, H, W]: clean first latent frames."""
    video_sampler, audio_sampler = make_samplers(solver, num_steps, shift)
    x_v, x_a = video_noise, audio_noise
    for k in tqdm(range(num_steps), desc="denoising", disable=not progress):
        if video_prefix is not None:
            x_v = _with_prefix(x_v, video_prefix)
        t = video_sampler.model_timestep(k, device=x_v.device)
        v_v, v_a = velocity(x_v, x_a, t)
        t_host = video_sampler.timesteps[k]  # the solver checks the timestep; a host copy reads no device value
        x_v = video_sampler.step(v_v[None], t_host, x_v[None])[0]
        x_a = audio_sampler.step(v_a[None], t_host, x_a[None])[0]
    if video_prefix is not None:
        x_v = _with_prefix(x_v, video_prefix)
    return x_v, x_a


class GuidedVelocity:
    """The release's CFG + skip-layer guidance as a velocity function, prompt-constant work done once.

    ``video_clean_frames``: leading latent frames that are clean conditioning (t = 0 on their tokens; 1 for
    image-to-video). ``caches``: the step caches per branch (empty unless ``speed.step_cache > 0``).
    """

    def __init__(
        self,
        model: FusionModel,
        text: Conditioning,
        cfg: GuidanceConfig,
        video_clean_frames: int = 0,
        speed: SpeedConfig | None = None,
    ) -> None:
        self.model, self.cfg, self.clean = model, cfg, video_clean_frames
        self.speed = speed = speed or SpeedConfig()
        vm, am = model.video_model, model.audio_model
        kv = speed.cache_text_kv
        self.pos_v, self.neg_v = vm.prepare_text([text.positive], kv), vm.prepare_text([text.video_negative], kv)
        self.pos_a, self.neg_a = am.prepare_text([text.positive], kv), am.prepare_text([text.audio_negative], kv)
        if speed.batch_cfg:  # rows: positive, negative
            self.both_v = PreparedText.cat([self.pos_v, self.neg_v])
            self.both_a = PreparedText.cat([self.pos_a, self.neg_a])
        self.tables: dict[str, RotaryTable] = {}  # built at the first call, when the latent sizes are known
        names = ("both",) if speed.batch_cfg else ("positive", "negative")
        self.caches = {n: StepCache(speed.step_cache) for n in names} if speed.step_cache > 0 else {}

    def __call__(self, x_v: torch.Tensor, x_a: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vm, am, cfg = self.model.video_model, self.model.audio_model, self.cfg
        if not self.tables:  # batch 1: broadcasts over the rows of a batched forward
            self.tables["video"], self.tables["audio"] = vm.rope_table([x_v]), am.rope_table([x_a])
        slg = cfg.slg_layer or None
        if self.speed.batch_cfg:
            rows = 2
            t = t.expand(rows)
            video = Stream([x_v] * rows, self._video_t(x_v, t), self.both_v, rope=self.tables["video"])
            audio = Stream([x_a] * rows, t, self.both_a, rope=self.tables["audio"])
            out_v, out_a = self.model(video, audio, slg_layer=slg, slg_rows=[1], cache=self.caches.get("both"),
                                      rows_share_input=True)
            (pos_v, neg_v), (pos_a, neg_a) = out_v, out_a
        else:
            video = Stream([x_v], self._video_t(x_v, t), self.pos_v, rope=self.tables["video"])
            audio = Stream([x_a], t, self.pos_a, rope=self.tables["audio"])
            (pos_v,), (pos_a,) = self.model(video, audio, cache=self.caches.get("positive"))
            (neg_v,), (neg_a,) = self.model(video.with_context(self.neg_v), audio.with_context(self.neg_a),
                                            slg_layer=slg, cache=self.caches.get("negative"))
        return (
            guidance(pos_v.to(x_v.dtype), neg_v.to(x_v.dtype), cfg.video_scale),
            guidance(pos_a.to(x_a.dtype), neg_a.to(x_a.dtype), cfg.audio_scale),
        )

    def _video_t(self, x_v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not self.clean:
            return t
        vm, rows = self.model.video_model, t.shape[0]
        return clean_prefix_timesteps(t, [vm.num_tokens(x_v)] * rows, [vm.tokens_per_unit(x_v)] * rows, self.clean)


def guided_velocity(
    model: FusionModel,
    text: Conditioning,
    cfg: GuidanceConfig,
    video_clean_frames: int = 0,
    speed: SpeedConfig | None = None,
) -> VelocityFn:
    """The release's CFG + SLG velocity (see :class:`GuidedVelocity`)."""
    return GuidedVelocity(model, text, cfg, video_clean_frames, speed)


def denoise(
    model: FusionModel,
    video_noise: torch.Tensor,
    audio_noise: torch.Tensor,
    text: Conditioning,
    cfg: GuidanceConfig,
    first_frame: torch.Tensor | None = None,
    progress: bool = True,
    speed: SpeedConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's sampling: guided velocity + loop. video_noise [C, F, H, W], audio_noise [L, C],
    first_frame [C, 1, H, W] for image-to-video."""
    clean = 0 if first_frame is None else first_frame.shape[1]
    velocity = guided_velocity(model, text, cfg, video_clean_frames=clean, speed=speed)
    return sample(velocity, video_noise, audio_noise, cfg.solver, cfg.num_steps, cfg.shift, first_frame, progress)


def _with_prefix(x_v: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    return torch.cat([prefix.to(x_v.dtype), x_v[:, prefix.shape[1] :]], dim=1)
