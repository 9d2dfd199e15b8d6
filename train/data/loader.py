"""Micro-batches for one rank: shard stream -> decode (threads, order kept) -> length buckets -> batches.

The position after each batch is ``Batch.state``; ``BatchStream(..., state=that)`` continues with exactly the
batches that would have followed. Buckets: ``bucket_batches * batch_size`` consecutive samples are sorted by
token count and cut into batches (so variable-length audio is padded little), whose order is then shuffled.
A position inside a bucket is (stream position at the bucket's start, bucket number, batches done), and a
resume re-reads that one bucket.

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
from typing import Callable, Iterator, Optional

import torch

from data_pipeline.shards import read_index
from ovi.geometry import VAE_SPATIAL_FACTOR, ClipGeometry, audio_latents_for_samples
from train.config import TrainConfig
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


@dataclass
class Batch:
    samples: list[Sample]
    state: dict  # BatchStream position once this batch is consumed


def _crop_rng(seed: int, rank: int, index: int) -> random.Random:
    return random.Random(f"{seed}/{rank}/crop/{index}")


def decode_raw(raw: RawSample, cfg: TrainConfig, rank: int) -> Optional[Sample]:
    """mp4/wav/json -> pixels, wave and caption (``prepare_clip``); None when the clip is too short."""
    clips = prepare_clip(raw.key, raw.files, cfg, _crop_rng(cfg.seed, rank, raw.index))
    if not clips:
        return None
    clip = clips[0]
    tokens = audio_latents_for_samples(clip.audio.numel())
    if clip.video is not None:
        _, frames, height, width = clip.video.shape
        tokens += ClipGeometry.for_frames(frames).video_tokens(height, width)
    return Sample(raw.key, tokens, caption=clip.caption, video=clip.video, audio=clip.audio)


def decode_precomputed(raw: RawSample, cfg: TrainConfig, rank: int) -> Optional[Sample]:
    """Latents from train.precompute; audio longer than the stage's window is cropped in latent space."""
    lat = unpack_latents(raw.files)
    if lat.audio is None:
        raise ValueError(f"latent sample {raw.key} has no audio latents")
    if cfg.has_video and lat.video is None:
        raise ValueError(f"fusion needs video latents; sample {raw.key} has none (precomputed from audio shards?)")
    spec = AudioSpec.for_config(cfg)
    audio, want = lat.audio, spec.latents
    if audio.shape[0] < spec.least_latents:
        return None
    if cfg.has_video:
        audio = audio[:want]  # aligned with video frame 0
    elif audio.shape[0] > want:
        start = _crop_rng(cfg.seed, rank, raw.index).randrange(audio.shape[0] - want + 1)
        audio = audio[start : start + want]
    video = lat.video if cfg.has_video else None
    tokens = audio.shape[0]
    if video is not None:
        _, frames, h, w = video.shape  # latent grid
        tokens += frames * ClipGeometry.tokens_per_frame(h * VAE_SPATIAL_FACTOR, w * VAE_SPATIAL_FACTOR)
    return Sample(raw.key, tokens, text=lat.text, video=video, audio=audio.contiguous())


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

    def __iter__(self) -> Iterator[Batch]:
        d = self.cfg.data
        bucket_size = d.batch_size * d.bucket_batches
        bucket_idx, skip = self.state["bucket"], self.state["done"]
        start_state, start_bad = self.state["stream"], self.bad_samples
        samples = self._samples(start_state)
        while True:
            bucket = [next(samples) for _ in range(bucket_size)]
            end_state, end_bad = bucket[-1].state_after, self.bad_samples
            order = sorted(range(bucket_size), key=lambda i: (bucket[i].tokens, bucket[i].key))
            batches = [order[i : i + d.batch_size] for i in range(0, bucket_size, d.batch_size)]
            random.Random(f"{self.cfg.seed}/{self.rank}/bucket/{bucket_idx}").shuffle(batches)
            for j, idx in enumerate(batches):
                if j < skip:
                    continue
                if j + 1 == len(batches):  # finished bucket: the position is simply the next bucket's start
                    state = {"stream": end_state, "bucket": bucket_idx + 1, "done": 0, "bad_samples": end_bad}
                else:
                    state = {"stream": start_state, "bucket": bucket_idx, "done": j + 1, "bad_samples": start_bad}
                yield Batch([bucket[i] for i in idx], state)
            bucket_idx, skip, start_state, start_bad = bucket_idx + 1, 0, end_state, end_bad
