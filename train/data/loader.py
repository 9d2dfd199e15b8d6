"""Micro-batches for one rank: shard stream -> decode (threads, order kept) -> length buckets -> batches.

The position after each batch is ``Batch.state``; ``BatchStream(..., state=that)`` continues with exactly the
batches that would have followed. Length buckets (chunks): ``bucket_batches * batch_size`` consecutive samples
are sorted by token count and cut into batches (so variable-length audio is padded little), whose order is then
shuffled. A position inside a chunk is (stream position at the chunk's start, chunk number, batches done), and a
resume re-reads that one chunk.

With ``data.buckets`` (fusion; shape buckets) a chunk is read until it holds ``bucket_batches`` full batches of
one bucket each (aspect ratio and duration for raw clips, the latent shape for precomputed ones;
``BucketBatcher``), so every batch has one shape; a bucket's remainder at the chunk's end (< batch_size
samples, none at batch_size 1) is dropped and counted (``BatchStream.bucket_dropped``). The position is kept
the same way.

A fixed-length audio clip shorter than its window (``data.audio.pad_short``) is zero-padded to it in latent
space (``pad_audio``; raw clips: the waveform, encoded whole) and ``Sample.audio_mask`` marks the real
latents: the trainer passes it on as the audio stream's loss mask, so the padding carries no loss.

A sample that fails to decode is logged with its shard and member names, counted and skipped; the count is part
of the position (``bad_samples``, as of the bucket's start), so a resumed run counts the same skips once.
More than ``data.max_bad_samples`` skips (samples plus unreadable shards) on one rank stop the run.
"""
from __future__ import annotations

import logging
import random
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator, Optional

import torch

from data_pipeline.shards import read_index
from ovi.geometry import VAE_SPATIAL_FACTOR, VAE_TEMPORAL_FACTOR, ClipGeometry, audio_latents_for_samples
from train.config import TrainConfig
from train.data.buckets import Bucket, BucketBatcher, has_speech, pad_audio
from train.data.latents import unpack_latents
from train.data.media import AudioSpec, prepare_clip
from train.data.stream import RawSample, ShardStream

log = logging.getLogger(__name__)


class TooManyBadSamples(RuntimeError):
    pass


@dataclass
class Skipped:
    """A sample that could not be decoded (stands in its place so the stream position stays exact)."""

    state_after: dict


@dataclass
class Sample:
    key: str
    tokens: int  # latent tokens the model will see (video + audio), for bucketing and throughput
    caption: Optional[str] = None  # raw data: encoded by the trainer
    text: Optional[torch.Tensor] = None  # precomputed: [L_text, 4096]
    video: Optional[torch.Tensor] = None  # raw: pixels [3, T, H, W] in [-1, 1]; precomputed: latent [48, F, h, w]
    audio: Optional[torch.Tensor] = None  # raw: wave [N]; precomputed: latent [L, 20]
    state_after: Optional[dict] = None
    # [L_latents] bool, True on real audio latents of a short clip padded to the fixed length; None: all real.
    audio_mask: Optional[torch.Tensor] = None
    bucket: Optional[Bucket] = None  # data.buckets on: the shape group this sample is batched in


@dataclass
class Batch:
    samples: list[Sample]
    state: dict  # BatchStream position once this batch is consumed

    def audio_mask(self) -> Optional[torch.Tensor]:
        """[B, L] bool, True on real audio latents (the objective's loss mask), or None when no sample is padded.
        Padding only happens in fixed-length mode, so every sample of the batch has the same L."""
        masks = [s.audio_mask for s in self.samples]
        length = next((len(m) for m in masks if m is not None), None)
        if length is None:
            return None
        return torch.stack([torch.ones(length, dtype=torch.bool) if m is None else m for m in masks])


def _crop_rng(seed: int, rank: int, index: int) -> random.Random:
    return random.Random(f"{seed}/{rank}/crop/{index}")


def _real_latents_mask(real: int, length: int) -> Optional[torch.Tensor]:
    """[length] bool with the first ``real`` True; None when all are real."""
    return None if real >= length else torch.arange(length) < real


def decode_raw(raw: RawSample, cfg: TrainConfig, rank: int) -> Optional[Sample]:
    """mp4/wav/json -> pixels, wave and caption (``prepare_clip``); None when the clip is too short."""
    clips = prepare_clip(raw.key, raw.files, cfg, _crop_rng(cfg.seed, rank, raw.index))
    if not clips:
        return None
    clip = clips[0]
    spec = AudioSpec.for_config(cfg, clip.bucket.num_frames if clip.bucket else None)
    wave, mask = clip.audio, None
    if spec.fixed and wave.numel() < spec.length:  # a short clip (pad_short): pad, only its own latents count
        mask = _real_latents_mask(audio_latents_for_samples(wave.numel()), spec.latents)
        wave = AudioSpec.take(wave, 0, spec.length)
    tokens = audio_latents_for_samples(wave.numel())
    if clip.video is not None:
        _, frames, height, width = clip.video.shape
        tokens += ClipGeometry.for_frames(frames).video_tokens(height, width)
    return Sample(raw.key, tokens, caption=clip.caption, video=clip.video, audio=wave, audio_mask=mask,
                  bucket=clip.bucket)


def _latent_bucket(video: torch.Tensor) -> Bucket:
    """The pixel-space bucket of a video latent [48, F, h, w]."""
    _, frames, h, w = video.shape
    return Bucket(h * VAE_SPATIAL_FACTOR, w * VAE_SPATIAL_FACTOR, (frames - 1) * VAE_TEMPORAL_FACTOR + 1)


def _warn_speech_crop(key: str, have: int, want: int) -> None:
    log.debug("skipping %s: %d audio latents with speech, window %d", key, have, want)
    _warn_speech_crop_once()


@lru_cache(maxsize=1)  # once per process; each skipped chunk is named at debug level
def _warn_speech_crop_once() -> None:
    log.warning("skipping precomputed chunks with speech longer than this stage's window: their text cannot be cut "
                "in latent space; precompute with this stage's config so each chunk fits its window")


def decode_precomputed(raw: RawSample, cfg: TrainConfig, rank: int) -> Optional[Sample]:
    """Latents from train.precompute; audio longer than the stage's window is cropped in latent space, a short
    fixed-length one padded (``pad_audio``) with its mask."""
    lat = unpack_latents(raw.files)
    if lat.audio is None:
        raise ValueError(f"latent sample {raw.key} has no audio latents")
    if cfg.has_video and lat.video is None:
        raise ValueError(f"fusion needs video latents; sample {raw.key} has none (precomputed from audio shards?)")
    bucket = _latent_bucket(lat.video) if cfg.has_video and cfg.data.buckets.area else None
    spec = AudioSpec.for_config(cfg, bucket.num_frames if bucket else None)
    audio, want, mask = lat.audio, spec.latents, None
    if audio.shape[0] < spec.least_latents:
        return None
    if cfg.has_video:
        audio = audio[:want]  # aligned with video frame 0
    elif audio.shape[0] > want:
        if has_speech(lat.meta.get("caption", "")):
            # Its text was encoded for the whole chunk: a crop would keep a transcript it may no longer contain.
            _warn_speech_crop(raw.key, audio.shape[0], want)
            return None
        start = _crop_rng(cfg.seed, rank, raw.index).randrange(audio.shape[0] - want + 1)
        audio = audio[start : start + want]
    if spec.fixed and audio.shape[0] < want:  # a short clip kept by data.audio.pad_short
        audio, mask = pad_audio(audio, want)
    video = lat.video if cfg.has_video else None
    tokens = audio.shape[0]
    if video is not None:
        _, frames, h, w = video.shape  # latent grid
        tokens += frames * ClipGeometry.tokens_per_frame(h * VAE_SPATIAL_FACTOR, w * VAE_SPATIAL_FACTOR)
    return Sample(raw.key, tokens, text=lat.text, video=video, audio=audio.contiguous(), audio_mask=mask,
                  bucket=bucket)


def ordered_map(fn: Callable, items: Iterator, workers: int, lookahead: int) -> Iterator:
    """``map(fn, items)`` computed by ``workers`` threads up to ``lookahead`` items ahead, results in order."""
    if workers <= 0:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= lookahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class BatchStream:
    """Infinite micro-batches for one rank; see the module docstring for the position it keeps."""

    def __init__(self, cfg: TrainConfig, rank: int, state: Optional[dict] = None):
        self.cfg, self.rank = cfg, rank
        self.datasets = [read_index(d) for d in cfg.data.shards]
        self.state = state or {"stream": None, "bucket": 0, "done": 0}
        self.decode = decode_precomputed if cfg.data.source == "precomputed" else decode_raw
        self.bad_samples = int(self.state.get("bad_samples", 0))  # as of the stream position being read
        self.bad_shards = 0
        self.bucket_dropped = 0  # data.buckets: samples left in a bucket's unfilled batch at a chunk's end

    def _work(self, raw: RawSample) -> "Sample | Skipped | None":
        try:
            sample = self.decode(raw, self.cfg, self.rank)
        except Exception as e:  # noqa: BLE001 - any decoder failure on one sample must not stop the run
            members = ", ".join(f"{raw.key}.{ext}" for ext in sorted(raw.files))
            log.warning("skipping corrupt sample %s in %s (members %s; rank %d): %s: %s", raw.key, raw.shard,
                        members, self.rank, type(e).__name__, e)
            return Skipped(raw.state_after)
        if sample is not None:
            sample.state_after = raw.state_after
        return sample

    def _check_ceiling(self) -> None:
        total = self.bad_samples + self.bad_shards
        if total > self.cfg.data.max_bad_samples:
            raise TooManyBadSamples(
                f"rank {self.rank} skipped {self.bad_samples} corrupt sample(s) and {self.bad_shards} unreadable "
                f"shard(s), over data.max_bad_samples={self.cfg.data.max_bad_samples} (each is logged above): "
                "repair or re-pack the dataset, or raise data.max_bad_samples"
            )

    def _samples(self, stream_state: Optional[dict]) -> Iterator[Sample]:
        d = self.cfg.data
        stream = ShardStream(self.datasets, d.weights, self.cfg.seed, self.rank, d.interleave, stream_state)
        for sample in ordered_map(self._work, iter(stream), d.decode_workers, d.prefetch_samples):
            if isinstance(sample, Skipped):
                self.bad_samples += 1
            elif sample is not None:
                # Unreadable shards met so far on the way to this sample (prefetching reads ahead of it).
                self.bad_shards = len(sample.state_after.get("bad", ()))
                yield sample
            self._check_ceiling()

    def _chunk(self, samples: Iterator[Sample]) -> tuple[list[list[Sample]], dict]:
        """The next chunk's batches before shuffling, and the stream position after its last sample read."""
        d = self.cfg.data
        if not d.buckets.area:  # one length-sorted run of bucket_batches * batch_size samples
            chunk = [next(samples) for _ in range(d.batch_size * d.bucket_batches)]
            order = sorted(range(len(chunk)), key=lambda i: (chunk[i].tokens, chunk[i].key))
            batches = [[chunk[i] for i in order[j : j + d.batch_size]] for j in range(0, len(chunk), d.batch_size)]
            return batches, chunk[-1].state_after
        batcher: BucketBatcher[Sample] = BucketBatcher(d.batch_size)
        batches = []
        while len(batches) < d.bucket_batches:
            sample = next(samples)
            batch = batcher.add(sample.bucket, sample)
            if batch is not None:
                batches.append(batch)
        self.bucket_dropped += sum(len(rest) for rest in batcher.pending.values())
        return batches, sample.state_after

    def __iter__(self) -> Iterator[Batch]:
        bucket_idx, skip = self.state["bucket"], self.state["done"]
        start_state, start_bad = self.state["stream"], self.bad_samples
        samples = self._samples(start_state)
        while True:
            batches, end_state = self._chunk(samples)
            end_bad = self.bad_samples
            random.Random(f"{self.cfg.seed}/{self.rank}/bucket/{bucket_idx}").shuffle(batches)
            for j, batch in enumerate(batches):
                if j < skip:
                    continue
                if j + 1 == len(batches):  # finished chunk: the position is simply the next chunk's start
                    state = {"stream": end_state, "bucket": bucket_idx + 1, "done": 0, "bad_samples": end_bad}
                else:
                    state = {"stream": start_state, "bucket": bucket_idx, "done": j + 1, "bad_samples": start_bad}
                yield Batch(batch, state)
            bucket_idx, skip, start_state, start_bad = bucket_idx + 1, 0, end_state, end_bad
