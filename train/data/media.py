"""Raw clip -> model input: the one function (``prepare_clip``) that both ``train.precompute`` and the
trainer's raw-data loader use to turn a shard sample's members (mp4, wav, json) into pixels, audio and caption.

    mp4 --first num_frames--> uint8 [T, h, w, 3] --ovi.imaging.frames_to_pixels--> [3, T, H, W] in [-1, 1]
    wav --16 kHz mono--> [N] --AudioSpec window (fixed: exactly the clip geometry's audio_samples)--> [n]
    json --> caption (a window that does not cover the whole clip keeps only the speech said inside it:
             buckets.caption_window, with the sample's word times when it has them, else without its <S>...<E>)

Fixed-length audio (fine-tuning, fusion) is exactly ``ClipGeometry.audio_samples`` long, the waveform that
encodes to the geometry's audio latents (121 frames -> 157 latents = 80,384 samples; 241 -> 314 = 160,768,
zero-padded past a 160,667-sample clip), so training and sampling use the same latent length. A clip shorter
than that (``data.audio.pad_short``) is returned at its own length; the loader pads it with a loss mask.
"""
from __future__ import annotations

import io
import json
import logging
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import soundfile as sf
import torch

from ovi.geometry import AUDIO_SAMPLES_PER_LATENT, SAMPLE_RATE, ClipGeometry
from ovi.imaging import frames_to_pixels
from ovi.media import read_video
from train.config import TrainConfig
from train.data.buckets import Bucket, bucket_for, caption_window, spoken_words

logger = logging.getLogger(__name__)


def decode_json(data: bytes) -> dict:
    return json.loads(data.decode("utf-8"))


def decode_audio(data: bytes) -> torch.Tensor:
    """wav bytes -> mono float32 waveform [N] at 16 kHz, in [-1, 1]."""
    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)  # [N, C]
    if rate != SAMPLE_RATE:
        raise ValueError(f"audio is {rate} Hz; the codec needs {SAMPLE_RATE} Hz (resample in the data pipeline)")
    return torch.from_numpy(wave.mean(axis=1))


def decode_video(data: bytes, num_frames: int, least: Optional[int] = None) -> torch.Tensor:
    """mp4 bytes -> up to the first ``num_frames`` frames as uint8 [T, H, W, 3]. Fewer than ``least`` (default
    ``num_frames``): ValueError."""
    frames, _ = read_video(io.BytesIO(data), max_frames=num_frames)
    need = num_frames if least is None else least
    if len(frames) < need:
        raise ValueError(f"clip has {len(frames)} frames, {need} needed")
    return torch.from_numpy(frames)


@dataclass(frozen=True)
class AudioSpec:
    """How much of a clip's audio one training sample takes, in samples at 16 kHz."""

    length: int  # fixed: exactly this (zero-padded if the clip ends a little early); variable: at most this
    least: int  # the shortest clip that fills a window
    fixed: bool
    # The shortest clip kept (None: ``least``). Below ``least`` (fixed mode with data.audio.pad_short) a clip keeps
    # its own length here and is padded in latent space with a loss mask (train/data/loader.py).
    keep: Optional[int] = None

    def __post_init__(self) -> None:
        if self.keep is None:
            object.__setattr__(self, "keep", self.least)  # frozen dataclass: set once here

    @classmethod
    def for_config(cls, cfg: TrainConfig, num_frames: Optional[int] = None) -> AudioSpec:
        """``num_frames``: the clip's duration bucket (default ``data.video.num_frames``)."""
        a = cfg.data.audio
        if a.mode == "fixed":  # fusion is always fixed (train/config.py checks it)
            length = ClipGeometry.for_frames(num_frames or cfg.data.video.num_frames).audio_samples
            # Pad at most one latent's worth (32 ms): 241 frames are 160,667 samples, 314 latents need 160,768.
            least = length - AUDIO_SAMPLES_PER_LATENT + 1
            keep = min(least, round(a.min_seconds * SAMPLE_RATE)) if a.pad_short else least
            return cls(length, least, fixed=True, keep=keep)
        return cls(round(a.seconds * SAMPLE_RATE), round(a.min_seconds * SAMPLE_RATE), fixed=False)

    @property
    def latents(self) -> int:
        """Audio latents of a full window."""
        return self.length // AUDIO_SAMPLES_PER_LATENT

    @property
    def least_latents(self) -> int:
        """The fewest latents a precomputed sample may have (fewer: skipped)."""
        return self.latents if self.fixed and self.keep >= self.least else self.keep // AUDIO_SAMPLES_PER_LATENT

    def span(self, num_samples: int) -> int:
        """Samples one window takes from a clip of ``num_samples`` (a short fixed clip keeps its own length)."""
        return self.length if self.fixed and num_samples >= self.least else min(self.length, num_samples)

    def window(self, num_samples: int, rng: random.Random) -> Optional[tuple[int, int]]:
        """(start, length) of one window at a random offset, or None to skip the clip."""
        if num_samples < self.keep:
            return None
        length = self.span(num_samples)
        return rng.randrange(max(0, num_samples - length) + 1), length

    def chunks(self, num_samples: int) -> list[tuple[int, int]]:
        """Consecutive non-overlapping windows covering a clip (precompute): full windows, then a last one
        if it reaches the minimum (fixed mode pads it to full length, or with pad_short keeps a shorter one at
        its own length; variable mode keeps it shorter)."""
        out = [(s, self.length) for s in range(0, num_samples - self.length + 1, self.length)]
        rest_start = len(out) * self.length
        rest = num_samples - rest_start
        if rest > 0 and rest >= self.keep:
            out.append((rest_start, self.span(rest)))
        return out

    @staticmethod
    def take(wave: torch.Tensor, start: int, length: int) -> torch.Tensor:
        """``wave[start : start + length]``, zero-padded to ``length``."""
        out = wave[start : start + length]
        if out.numel() < length:
            out = torch.cat([out, out.new_zeros(length - out.numel())])
        return out.contiguous()


@dataclass
class ClipInput:
    """One training example before encoding."""

    caption: str
    audio: torch.Tensor  # [N] at 16 kHz
    video: Optional[torch.Tensor]  # [3, T, H, W] in [-1, 1]; None for audio stages
    audio_start: int  # offset of ``audio`` in the clip's wav, samples
    meta: dict  # the sample's json
    bucket: Optional[Bucket] = None  # with data.buckets: the clip's (height, width, num_frames); video is that size


# A window short of the clip's end by less than this still holds the whole clip: the clip geometry itself drops
# the tail past its last audio latent (121 frames: 80,667 samples of sound, an 80,384-sample window).
WHOLE_CLIP_SLACK = SAMPLE_RATE // 20  # 50 ms


def window_caption(meta: dict, start: int, length: int, total: int) -> str:
    """The caption for audio samples [start, start + length) of a clip of ``total`` samples: the whole clip keeps
    its caption; a crop keeps only the words said inside it (``caption_window``), or none without word times."""
    if start == 0 and length >= total - WHOLE_CLIP_SLACK:
        return meta["caption"]
    caption, dropped = caption_window(meta["caption"], start / SAMPLE_RATE, (start + length) / SAMPLE_RATE,
                                      spoken_words(meta))
    if dropped:
        _log_dropped_speech()
    return caption


@lru_cache(maxsize=1)  # once per process: every crop of every such clip would say the same
def _log_dropped_speech() -> None:
    logger.info("a crop of a clip with speech dropped its <S>...<E> transcript (the sample has no word times); "
                "add \"spoken\": [{start, end, text}, ...] to the samples' json to keep the words inside each crop")


def prepare_clip(
    key: str, files: dict[str, bytes], cfg: TrainConfig, rng: Optional[random.Random]
) -> list[ClipInput]:
    """A raw sample's members -> model inputs for the stage; [] when the clip is too short for it.

    Audio-video: the first ``data.video.num_frames`` frames resized to ``data.video.height x width`` (with
    ``data.buckets``: to the clip's aspect-ratio / duration bucket) and the audio window starting with frame 0.
    Audio only: one window at an ``rng``-drawn offset (training), or with ``rng=None`` every consecutive window
    (precompute). A fixed-length window of a short clip (``data.audio.pad_short``) keeps the clip's own length.
    """
    meta = decode_json(files["json"])
    if "wav" not in files:
        raise ValueError(f"sample {key} has no .wav member (members: {sorted(files)}); is it a raw-clip shard?")
    wave = decode_audio(files["wav"])
    spec = AudioSpec.for_config(cfg)
    if not cfg.has_video:
        windows = spec.chunks(wave.numel()) if rng is None else [w for w in [spec.window(wave.numel(), rng)] if w]
        total = wave.numel()
        return [ClipInput(window_caption(meta, s, n, total), spec.take(wave, s, n), None, s, meta) for s, n in windows]
    if "mp4" not in files:
        raise ValueError(f"fusion needs audio-video shards; sample {key} has members {sorted(files)}, no .mp4")
    if not cfg.data.buckets.area:
        return _fixed_size_clip(files["mp4"], wave, meta, cfg, spec)
    return _bucketed_clip(files["mp4"], wave, meta, cfg)


def _fixed_size_clip(mp4: bytes, wave: torch.Tensor, meta: dict, cfg: TrainConfig, spec: AudioSpec) -> list[ClipInput]:
    """The first ``data.video.num_frames`` frames resized and centre-cropped to ``data.video.height x width``."""
    if wave.numel() < spec.keep:
        return []
    v = cfg.data.video
    try:
        frames = decode_video(mp4, v.num_frames)
    except ValueError:
        return []  # shorter than num_frames
    pixels = frames_to_pixels(frames, v.height, v.width)
    span = spec.span(wave.numel())
    return [ClipInput(window_caption(meta, 0, span, wave.numel()), spec.take(wave, 0, span), pixels, 0, meta)]


def _bucketed_clip(mp4: bytes, wave: torch.Tensor, meta: dict, cfg: TrainConfig) -> list[ClipInput]:
    """The clip resized to its aspect ratio at ``data.buckets.area`` and cut to the longest bucket length that
    fits (``bucket_for``); its audio follows that length's geometry."""
    d = cfg.data
    allowed = d.bucket_frames
    try:
        frames = decode_video(mp4, max(allowed), least=min(allowed))  # uint8 [T, h, w, 3]
    except ValueError:
        return []  # shorter than every bucket length
    bucket = bucket_for(frames.shape[1], frames.shape[2], frames.shape[0], d.buckets.area, allowed)
    if bucket is None:
        return []
    spec = AudioSpec.for_config(cfg, bucket.num_frames)
    if wave.numel() < spec.keep:
        return []
    pixels = frames_to_pixels(frames[: bucket.num_frames], bucket.height, bucket.width)
    span = spec.span(wave.numel())
    return [ClipInput(window_caption(meta, 0, span, wave.numel()), spec.take(wave, 0, span), pixels, 0, meta, bucket)]
