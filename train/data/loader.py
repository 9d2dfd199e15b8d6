"""Micro-batches for one rank: shard stream -> decode (threads, order kept) -> length buckets -> batches.

The position after each batch is ``Batch.state``; ``BatchStream(..., state=that)`` continues with exactly the
batches that would have followed. Buckets: ``bucket_batches * batch_size`` consecutive samples are sorted by
token count and cut into batches (so variable-length audio is padded little), whose order is then shuffled.
A position inside a bucket is (stream position at the bucket's start, bucket number, batches done), and a
resume re-reads that one bucket.
"""
from __future__ import annotations

import random
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from train.config import AUDIO_SAMPLE_RATE, TrainConfig
from train.data.latents import unpack_latents
from train.data.media import audio_window, decode_audio, decode_json, decode_video, to_model_pixels
from train.data.shards import RawSample, ShardStream, read_index
from train.encoders import audio_latent_len, video_tokens


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
    """mp4/wav/json -> pixels, wave and caption; None when the clip is too short for the stage."""
    meta = decode_json(raw.files["json"])
    if "wav" not in raw.files:
        raise ValueError(f"sample {raw.key} has no .wav member (members: {sorted(raw.files)})")
    wave = decode_audio(raw.files["wav"])
    a = cfg.data.audio
    video = None
    if cfg.has_video:
        if "mp4" not in raw.files:
            raise ValueError(f"fusion needs audio-video shards; sample {raw.key} has no .mp4 member")
        # The audio window starts with video frame 0 so the two stay in sync.
        need = round(a.seconds * AUDIO_SAMPLE_RATE)
        if wave.numel() < need:
            return None
        wave = wave[:need]
        try:
            frames = decode_video(raw.files["mp4"], cfg.data.video.num_frames)
        except ValueError:
            return None  # shorter than num_frames
        video = to_model_pixels(frames, cfg.data.video.height, cfg.data.video.width)
    else:
        window = audio_window(wave.numel(), a.mode, a.seconds, a.min_seconds, _crop_rng(cfg.seed, rank, raw.index))
        if window is None:
            return None
        start, length = window
        wave = wave[start : start + length]
    tokens = audio_latent_len(wave.numel())
    if video is not None:
        tokens += video_tokens(video.shape[1], video.shape[2], video.shape[3])
    return Sample(raw.key, tokens, caption=meta["caption"], video=video, audio=wave.contiguous())


def decode_precomputed(raw: RawSample, cfg: TrainConfig, rank: int) -> Optional[Sample]:
    """Latents from train.precompute; audio longer than the stage's window is cropped in latent space."""
    lat = unpack_latents(raw.files)
    if lat.audio is None:
        raise ValueError(f"latent sample {raw.key} has no audio latents")
    if cfg.has_video and lat.video is None:
        raise ValueError(f"fusion needs video latents; sample {raw.key} has none (precomputed from audio shards?)")
    a = cfg.data.audio
    audio = lat.audio
    want = audio_latent_len(round(a.seconds * AUDIO_SAMPLE_RATE))
    if cfg.has_video:
        if audio.shape[0] < want:
            return None
        audio = audio[:want]  # aligned with video frame 0
    else:
        least = want if a.mode == "fixed" else audio_latent_len(round(a.min_seconds * AUDIO_SAMPLE_RATE))
        if audio.shape[0] < least:
            return None
        if audio.shape[0] > want:
            start = _crop_rng(cfg.seed, rank, raw.index).randrange(audio.shape[0] - want + 1)
            audio = audio[start : start + want]
    video = lat.video if cfg.has_video else None
    tokens = audio.shape[0]
    if video is not None:
        tokens += video.shape[1] * (video.shape[2] // 2) * (video.shape[3] // 2)
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

    def _samples(self, stream_state: Optional[dict]) -> Iterator[Sample]:
        d = self.cfg.data
        stream = ShardStream(self.datasets, d.weights, self.cfg.seed, self.rank, d.interleave, stream_state)

        def work(raw: RawSample) -> Optional[Sample]:
            sample = self.decode(raw, self.cfg, self.rank)
            if sample is not None:
                sample.state_after = raw.state_after
            return sample

        for sample in ordered_map(work, iter(stream), d.decode_workers, d.prefetch_samples):
            if sample is not None:
                yield sample

    def __iter__(self) -> Iterator[Batch]:
        d = self.cfg.data
        bucket_size = d.batch_size * d.bucket_batches
        bucket_idx, skip = self.state["bucket"], self.state["done"]
        start_state = self.state["stream"]
        samples = self._samples(start_state)
        while True:
            bucket = [next(samples) for _ in range(bucket_size)]
            end_state = bucket[-1].state_after
            order = sorted(range(bucket_size), key=lambda i: (bucket[i].tokens, bucket[i].key))
            batches = [order[i : i + d.batch_size] for i in range(0, bucket_size, d.batch_size)]
            random.Random(f"{self.cfg.seed}/{self.rank}/bucket/{bucket_idx}").shuffle(batches)
            for j, idx in enumerate(batches):
                if j < skip:
                    continue
                if j + 1 == len(batches):  # finished bucket: the position is simply the next bucket's start
                    state = {"stream": end_state, "bucket": bucket_idx + 1, "done": 0}
                else:
                    state = {"stream": start_state, "bucket": bucket_idx, "done": j + 1}
                yield Batch([bucket[i] for i in idx], state)
            bucket_idx, skip, start_state = bucket_idx + 1, 0, end_state
