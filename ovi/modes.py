"""Generation from given media: V2A (video given), A2V (audio given), extension (a clean prefix), I2AV.

    given clean latents (video prefix of k frames / audio prefix of m latents; all of them for V2A / A2V)
    --velocity closure (pins the given part before every model call)--> ovi.denoise.sample
    --> latents whose given part is the input itself

Two ways to condition, both velocity closures around the release's guidance (:class:`GuidedVelocity`):

- ``"clean"``: the given tokens are clean, t = 0 on them (as in training with ``objective.mode``: v2a, a2v,
  extension). Right for weights fine-tuned in that mode, and for the release's first video frame (it was trained
  image-to-video).
- ``"noised"`` (zero-shot): the given part is replaced every step by its ground truth noised to the current
  level, ``FLOW.noise(x, eps, sigma)`` with one fixed eps, and keeps the shared timestep: the release was trained
  with one timestep for all tokens of both towers, so it has never seen a clean audio track or a clean video
  beside noisy tokens; noised ground truth keeps its input on the distribution it was trained on.
  Use it for V2A / A2V / audio extension with the released weights.

Given media from files (the second half, :func:`load_given`): decoded, brought to 24 fps / 16 kHz and the model's
size, cut or padded to the clip, then encoded by the pipeline; what was given is written back as given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from ovi.denoise import VelocityFn
from ovi.flow import FLOW
from ovi.geometry import (AUDIO_SAMPLES_PER_LATENT, FPS, SAMPLE_RATE, VAE_TEMPORAL_FACTOR, ClipGeometry,
                          audio_latents_for_seconds)
from ovi.imaging import frames_to_pixels, i2v_size, resize_frames
from ovi.models.stream import Stream, clean_prefix_timesteps
from ovi.sync_guidance import SyncGuidance, moved_in_time, sync_guided

CONDITIONINGS = ("clean", "noised")


@dataclass
class Given:
    """Clean latents the output must keep: ``video`` [C, k, h, w] leading latent frames, ``audio`` [m, C] leading
    audio latents (k = all frames: V2A; m = all latents: A2V)."""

    video: torch.Tensor | None = None
    audio: torch.Tensor | None = None

    @property
    def video_units(self) -> int:
        return 0 if self.video is None else self.video.shape[1]

    @property
    def audio_units(self) -> int:
        return 0 if self.audio is None else self.audio.shape[0]

    def pin(self, x_v: torch.Tensor, x_a: torch.Tensor, sigma: float = 0.0,
            eps: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x_v, x_a with the given part replaced by the input (sigma = 0) or the input noised to ``sigma``."""
        if self.video is not None:
            v = self.video if eps is None else FLOW.noise(self.video.float(), eps[0], sigma)
            x_v = torch.cat([v.to(x_v.dtype), x_v[:, self.video_units:]], dim=1)
        if self.audio is not None:
            a = self.audio if eps is None else FLOW.noise(self.audio.float(), eps[1], sigma)
            x_a = torch.cat([a.to(x_a.dtype), x_a[self.audio_units:]], dim=0)
        return x_v, x_a


class CleanTokens:
    """The fusion model with t = 0 on the given tokens of every stream it receives (the "clean" conditioning).

    Quacks as a :class:`FusionModel` for :class:`GuidedVelocity` (towers + call), so the release's guidance,
    batching and caching run unchanged around it."""

    def __init__(self, model, given: Given) -> None:  # noqa: ANN001 - a FusionModel
        self.model, self.given = model, given
        self.video_model, self.audio_model = model.video_model, model.audio_model

    def _retime(self, tower, stream: Stream | None, units: int) -> Stream | None:  # noqa: ANN001
        if stream is None or not units or stream.t.ndim != 1:
            return stream
        counts = [tower.num_tokens(x) for x in stream.latents]
        t = clean_prefix_timesteps(stream.t, counts, [tower.tokens_per_unit(x) for x in stream.latents], units)
        return stream.with_latents(stream.latents, t)

    def __call__(self, video: Stream | None, audio: Stream | None, **kwargs):  # noqa: ANN003, ANN204
        return self.model(self._retime(self.video_model, video, self.given.video_units),
                          self._retime(self.audio_model, audio, self.given.audio_units), **kwargs)


def given_velocity(inner: VelocityFn, given: Given, conditioning: str, seed: int = 0) -> VelocityFn:
    """Wrap a velocity function so every call sees the given part pinned (clean, or noised to the step's sigma)."""
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
    eps = None
    if conditioning == "noised":  # one fixed noise draw: the given part moves along one straight flow path
        g = torch.Generator().manual_seed(seed)
        eps = (torch.randn(given.video.shape, generator=g).to(given.video.device) if given.video is not None else None,
               torch.randn(given.audio.shape, generator=g).to(given.audio.device) if given.audio is not None else None)

    def velocity(x_v: torch.Tensor, x_a: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = float(t.flatten()[0]) / FLOW.timestep(1.0)
        return inner(*given.pin(x_v, x_a, sigma, eps), t)

    return velocity


def denoise_given(model, video_noise: torch.Tensor, audio_noise: torch.Tensor, text, cfg, given: Given,  # noqa: ANN001
                  conditioning: str = "noised", seed: int = 0, progress: bool = True, speed=None,  # noqa: ANN001
                  sync: SyncGuidance | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's guided sampling with ``given`` kept: (video latent, audio latent), the given part exact.
    ``sync``: sync guidance (ovi.sync_guidance) of the stream generated beside a whole given one."""
    from ovi.denoise import guided_velocity, sample

    def velocity_beside(g: Given) -> VelocityFn:
        net = CleanTokens(model, g) if conditioning == "clean" else model
        return given_velocity(guided_velocity(net, text, cfg, speed=speed), g, conditioning, seed)

    velocity = velocity_beside(given)
    whole_video, whole_audio = given.video_units == video_noise.shape[1], given.audio_units == audio_noise.shape[0]
    if sync is not None and sync.active and (whole_video or whole_audio):
        v, a = moved_in_time(given.video if whole_video else None, given.audio if whole_audio else None, sync.shift_s)
        moved = Given(v if whole_video else given.video, a if whole_audio else given.audio)
        velocity = sync_guided(velocity, velocity_beside(moved), sync.scale, video=whole_audio, audio=whole_video)
    x_v, x_a = sample(velocity, video_noise, audio_noise, cfg.solver, cfg.num_steps, cfg.shift, progress=progress)
    return given.pin(x_v, x_a)


# --- given media: files (or arrays) -> model-size pixels and 16 kHz waveform at the clip geometry ------------------
# `ovi-generate --video / --audio / --extend` and `OviPipeline.generate(video=, audio=, extend=)`. What is given is
# written back as given (V2A: the input frames, A2V: the input audio, extension: the input's tail), so it never
# passes through a VAE round trip; only the generated part is decoded.

KIND_TO_MODE = {"video": "v2a", "audio": "a2v", "extend": "extend"}  # input name -> mode recorded in the sidecar
# A V2A video / A2V audio up to this much shorter than the clip is padded (last frame held, silence): a 5.00 s
# clip feeds a 5.04 s model. Anything shorter is refused.
SHORT_TOLERANCE_S = 0.25
ARRAY_SOURCE = "<array>"

MediaSource = str | Path | np.ndarray | torch.Tensor


@dataclass
class GivenMedia:
    """Given media prepared for one generation (:func:`load_given`)."""

    mode: str  # v2a | a2v | extend
    source: str  # the path, or "<array>"
    frames: torch.Tensor | None  # [3, T, H, W] float32 in [-1, 1], model size: V2A all frames, extension the prefix
    wave: torch.Tensor | None  # [N] float32 at 16 kHz: A2V the clip's audio_samples, extension the prefix's audio

    @property
    def size(self) -> tuple[int, int] | None:
        return None if self.frames is None else tuple(self.frames.shape[2:])


def given_inputs(video: MediaSource | None = None, audio: MediaSource | None = None,
                 extend: MediaSource | None = None) -> dict[str, MediaSource]:
    """The given inputs that are set, by name (empty strings and None dropped)."""
    items = {"video": video, "audio": audio, "extend": extend}
    return {k: v for k, v in items.items() if v is not None and not (isinstance(v, (str, Path)) and str(v) == "")}


def extend_latent_frames(geometry: ClipGeometry, extend_frames: int = 0) -> int:
    """Latent frames of an extension's clean prefix: ``extend_frames``, or (0) a quarter of the clip's, at least 1."""
    return extend_frames or max(1, geometry.latent_frames // 4)


def prefix_video_frames(latents: int) -> int:
    """Video frames that ``latents`` leading latent frames hold (the causal VAE: the first one holds one frame)."""
    return 1 + VAE_TEMPORAL_FACTOR * (latents - 1)


def required_seconds(kind: str, geometry: ClipGeometry, extend_frames: int = 0) -> float:
    """How long a given input must be: the clip (less the tolerance) for V2A / A2V, the prefix for extension."""
    if kind == "extend":
        return prefix_video_frames(extend_latent_frames(geometry, extend_frames)) / geometry.fps
    need = geometry.duration_s if kind == "video" else geometry.audio_samples / geometry.sample_rate
    return max(0.0, need - SHORT_TOLERANCE_S)


def at_fps(frames: np.ndarray, fps: float, target: int) -> np.ndarray:
    """[T, ...] frames at ``fps`` -> the frames on screen at each tick of ``target`` fps over the same time."""
    if abs(fps - target) < 1e-3:
        return frames
    n = max(1, int(len(frames) * target / fps + 1e-6))
    index = np.minimum(np.floor(np.arange(n) * fps / target + 1e-6).astype(int), len(frames) - 1)
    return frames[index]


def _fit(x: np.ndarray, n: int, pad: str) -> np.ndarray:
    """The first ``n`` items of ``x``; a short ``x`` is padded with its last item ("edge") or zeros."""
    if len(x) >= n:
        return x[:n]
    widths = [(0, n - len(x))] + [(0, 0)] * (x.ndim - 1)
    return np.pad(x, widths, mode="edge" if pad == "edge" else "constant")


def _frames(source: MediaSource, max_seconds: float | None = None) -> tuple[np.ndarray, float]:
    """uint8 [T, h, w, 3] and fps from a file (decoding only what ``max_seconds`` needs), or an array at 24 fps."""
    from ovi.media import read_video

    if isinstance(source, (str, Path)):
        with av.open(str(source)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or FPS)
        limit = None if max_seconds is None else math.ceil(max_seconds * rate) + 1
        return read_video(source, max_frames=limit)
    frames = source.cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"a video array must be uint8 [T, H, W, 3] at {FPS} fps, got {frames.dtype} {frames.shape}")
    return frames, float(FPS)


def _wave(source: MediaSource) -> np.ndarray:
    """float32 [N] at 16 kHz from a file (any container with an audio stream) or an array at 16 kHz."""
    from ovi.media import read_audio

    if isinstance(source, (str, Path)):
        return read_audio(source, SAMPLE_RATE)
    wave = (source.detach().float().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source))
    if wave.ndim != 1 or not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(f"an audio array must be float mono [N] at {SAMPLE_RATE} Hz, got {wave.dtype} {wave.shape}")
    return wave.astype(np.float32)


def _too_short(kind: str, source: MediaSource, have_s: float, need_s: float) -> ValueError:
    return ValueError(f"--{kind} {source if isinstance(source, (str, Path)) else ARRAY_SOURCE} is {have_s:.2f} s, "
                      f"shorter than the {need_s:.2f} s this needs; give a longer clip"
                      + (" or a smaller extend_frames" if kind == "extend" else ""))


def load_given(kind: str, source: MediaSource, geometry: ClipGeometry, area: int, extend_frames: int = 0
               ) -> GivenMedia:
    """Decode one given input and cut/pad it to the clip: ``kind`` is "video" (V2A), "audio" (A2V) or "extend".

    Video goes to 24 fps (the frame on screen at each tick) and to the multiple-of-32 size closest to ``area``
    with its aspect ratio (``i2v_size``; resized to cover and centre-cropped). Extension takes the input's *end*:
    the last ``prefix_video_frames(k)`` frames become the new clip's first k latent frames, and the audio over the
    same time its first audio latents, so the output continues the input.
    """
    name = str(source) if isinstance(source, (str, Path)) else ARRAY_SOURCE
    if kind == "audio":
        wave = _wave(source)
        if len(wave) / SAMPLE_RATE < required_seconds(kind, geometry):
            raise _too_short(kind, source, len(wave) / SAMPLE_RATE, required_seconds(kind, geometry))
        return GivenMedia("a2v", name, None, torch.from_numpy(_fit(wave, geometry.audio_samples, "zeros").copy()))
    if kind not in KIND_TO_MODE:
        raise ValueError(f"given input kind must be one of {sorted(KIND_TO_MODE)}, got {kind!r}")
    frames, fps = _frames(source, geometry.duration_s if kind == "video" else None)
    frames = at_fps(frames, fps, geometry.fps)
    need = required_seconds(kind, geometry, extend_frames)
    if len(frames) / geometry.fps < need - 1e-6:
        raise _too_short(kind, source, len(frames) / geometry.fps, need)
    height, width = i2v_size(frames.shape[1], frames.shape[2], area)
    if kind == "video":
        frames = _fit(frames, geometry.num_frames, "edge")
        return GivenMedia("v2a", name, frames_to_pixels(torch.from_numpy(resize_frames(frames, height, width)),
                                                        None, None), None)
    n = prefix_video_frames(extend_latent_frames(geometry, extend_frames))
    start_s = (len(frames) - n) / geometry.fps  # where the prefix starts in the input
    pixels = frames_to_pixels(torch.from_numpy(resize_frames(frames[-n:], height, width)), None, None)
    wave = None
    if isinstance(source, (str, Path)) and _has_audio(source):  # a silent input: the audio is generated whole
        samples = max(1, audio_latents_for_seconds(n / geometry.fps)) * AUDIO_SAMPLES_PER_LATENT
        start = round(start_s * SAMPLE_RATE)
        wave = torch.from_numpy(_fit(_wave(source)[start:], samples, "zeros").copy())
    return GivenMedia("extend", name, pixels, wave)


def _has_audio(path: str | Path) -> bool:
    with av.open(str(path)) as container:
        return bool(container.streams.audio)


def write_back(media: GivenMedia, video: torch.Tensor | None, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoded output ([3, T, H, W], [N]) with what was given put back as given: V2A the input frames, A2V the
    input audio, extension the input's tail at the start (frames and audio; the rest is the continuation)."""
    if media.mode == "v2a":
        return media.frames, audio
    if media.mode == "a2v":
        return video, media.wave
    video = torch.cat([media.frames, video[:, media.frames.shape[1]:]], dim=1)
    if media.wave is not None:
        audio = torch.cat([media.wave, audio[len(media.wave):]])
    return video, audio
