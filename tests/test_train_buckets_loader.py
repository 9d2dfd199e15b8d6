"""Shape buckets and padded short audio wired into the training data path (data.buckets, data.audio.pad_short):
raw clips of two aspect ratios become batches of one bucket shape each, precomputed latents are batched by
shape, a short fixed-length clip is padded with a mask that keeps the padding out of the loss, and with both
switches off the loader yields what it did before."""
from __future__ import annotations

import itertools
import json
import random
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from data_pipeline.shards import read_index
from ovi.config import load_fusion_config
from ovi.geometry import audio_latents_for_samples
from ovi.models.tower import Tower
from train.config import load_train_config
from train.data.buckets import bucket_size
from train.data.latents import LATENTS_EXT
from train.data.loader import Batch, BatchStream, decode_precomputed, decode_raw
from train.data.media import AudioSpec
from train.data.stream import RawSample, ShardStream
from train.objective import FlowMatchingObjective
from train.precompute import main as precompute_main
from train.strategies import AudioStage
from train.synthetic import make_clip, write_dataset, write_shards

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs/model/tiny.yaml"
AREA = 64 * 64
SOURCES = [(48, 96), (96, 48)] * 3  # (height, width): wide and tall clips in one shard folder
FAST = ["data.interleave=1", "data.decode_workers=0", "data.video.num_frames=9", "encoders.kind=random"]
BUCKETED = ["data.source=raw", f"data.buckets.area={AREA}", "data.batch_size=2", "data.bucket_batches=2", *FAST]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("buckets")
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        clips = [make_clip(Path(tmp), i, rng, video=True, width=w, height=h, num_frames=9, seconds=9 / 24)
                 for i, (h, w) in enumerate(SOURCES)]
    write_shards(root / "av", clips, 3, "av", "audio_video")
    precompute_main(["--config", str(REPO / "configs/train/fusion_release_finetune.yaml"), "--input",
                     str(root / "av"), "--out", str(root / "av_lat"), "--store-dtype", "fp32", *FAST,
                     f"data.buckets.area={AREA}"])
    audio = write_dataset(root / "audio", 2, 2, video=False, seconds=[5.04, 2.0])  # the 2 s clip is short
    return {"av": root / "av", "av_lat": root / "av_lat", "audio": audio}


def config(name: str, shards: Path, *overrides: str):
    return load_train_config(REPO / f"configs/train/{name}.yaml", [f"data.shards=[{shards}]", *overrides])


def source_size(sample_key: str) -> tuple[int, int]:
    return SOURCES[int(sample_key.split("_")[1])]


def test_raw_clips_of_two_aspect_ratios_make_batches_of_one_bucket_shape(data) -> None:
    cfg = config("fusion_release_finetune", data["av"], *BUCKETED)
    stream = BatchStream(cfg, rank=0)
    batches = list(itertools.islice(iter(stream), 6))
    shapes = set()
    for b in batches:
        assert len(b.samples) == 2
        want = {bucket_size(*source_size(s.key), AREA) for s in b.samples}
        assert len(want) == 1  # one aspect ratio per batch
        (h, w), = want
        assert {tuple(s.video.shape) for s in b.samples} == {(3, 9, h, w)}
        assert {(s.bucket.height, s.bucket.width, s.bucket.num_frames) for s in b.samples} == {(h, w, 9)}
        shapes.add((h, w))
    assert shapes == {bucket_size(48, 96, AREA), bucket_size(96, 48, AREA)} == {(32, 96), (96, 32)}
    # The position still resumes exactly, inside a chunk and at its end.
    for cut in (0, 1, 3):
        state = json.loads(json.dumps(batches[cut].state))
        resumed = list(itertools.islice(iter(BatchStream(cfg, 0, state)), 6 - cut - 1))
        assert [[s.key for s in b.samples] for b in resumed] == [[s.key for s in b.samples] for b in batches[cut + 1 :]]


def test_precomputed_latents_are_bucketed_and_batched_by_shape(data) -> None:
    on = config("fusion_release_finetune", data["av_lat"], "data.batch_size=2", "data.bucket_batches=2", *FAST)
    latent_shapes = set()
    for b in itertools.islice(iter(BatchStream(on, rank=0)), 6):
        shapes = {tuple(s.video.shape) for s in b.samples}
        assert len(shapes) == 1
        latent_shapes |= shapes
    assert latent_shapes == {(48, 3, 2, 6), (48, 3, 6, 2)}  # (32, 96) and (96, 32) pixels / 16
    # Without buckets the same latents are batched by token count only: shapes mix in a batch.
    off = config("fusion_release_finetune", data["av_lat"], "data.batch_size=2", "data.bucket_batches=2",
                 "data.buckets.area=0", *FAST)
    mixed = [len({tuple(s.video.shape) for s in b.samples}) for b in itertools.islice(iter(BatchStream(off, 0)), 6)]
    assert max(mixed) == 2


def test_buckets_off_yields_the_length_sorted_batches_as_before(data) -> None:
    over = ["data.source=raw", "data.batch_size=2", "data.bucket_batches=2", "data.video.height=64",
            "data.video.width=64", *FAST]
    cfg = config("fusion", data["av"], *over)
    got = [[s.key for s in b.samples] for b in itertools.islice(iter(BatchStream(cfg, rank=0)), 4)]
    # The old rule, spelled out: chunks of 4 decoded samples sorted by (tokens, key), cut in 2, shuffled by seed.
    samples = (decode_raw(r, cfg, 0) for r in ShardStream([read_index(data["av"])], None, cfg.seed, 0, 1))
    want = []
    for chunk_idx in range(2):
        chunk = sorted((next(samples) for _ in range(4)), key=lambda s: (s.tokens, s.key))
        cut = [[s.key for s in chunk[i : i + 2]] for i in (0, 2)]
        random.Random(f"{cfg.seed}/0/bucket/{chunk_idx}").shuffle(cut)
        want += cut
    assert got == want
    first = list(itertools.islice(iter(BatchStream(cfg, 0)), 2))
    assert all(s.bucket is None and s.video.shape == (3, 9, 64, 64) for b in first for s in b.samples)


def first_raw(dataset: Path, key: str) -> RawSample:
    for raw in ShardStream([read_index(dataset)], None, 0, 0, 1):
        if raw.key == key:
            return raw
    raise AssertionError(key)


def test_short_fixed_audio_is_padded_with_a_mask_when_asked_and_skipped_otherwise(data) -> None:
    short = first_raw(data["audio"], "clip_000001")  # 2 s against the 5.04 s window
    off = config("audio_finetune", data["audio"], "data.source=raw", "data.audio.pad_short=false")
    assert decode_raw(short, off, 0) is None  # the old rule: skipped
    on = config("audio_finetune", data["audio"], "data.source=raw", "data.audio.pad_short=true")
    s = decode_raw(short, on, 0)
    spec = AudioSpec.for_config(on)
    assert s.audio.numel() == spec.length == 80_384 and not s.audio[32_000:].any()
    assert s.audio_mask.shape == (157,) and int(s.audio_mask.sum()) == audio_latents_for_samples(32_000) == 62
    assert bool(s.audio_mask[:62].all())
    full = decode_raw(first_raw(data["audio"], "clip_000000"), on, 0)
    assert full.audio_mask is None and full.audio.numel() == spec.length
    # Precomputed latents of a short clip: padded in latent space (pad_audio), same mask.
    files = {LATENTS_EXT: save({"text": torch.ones(2, 4096), "audio": torch.randn(62, 20)}), "json": b"{}"}
    raw = RawSample("short", files, 0, "mem", {})
    assert decode_precomputed(raw, config("audio_finetune", data["audio"], "data.audio.pad_short=false"), 0) is None
    p = decode_precomputed(raw, config("audio_finetune", data["audio"], "data.audio.pad_short=true"), 0)
    assert p.audio.shape == (157, 20) and torch.equal(p.audio_mask, s.audio_mask) and not p.audio[62:].any()


def test_the_padding_of_a_short_clip_has_no_share_of_the_loss(data) -> None:
    cfg = config("audio_finetune", data["audio"], "data.audio.pad_short=true", f"model={TINY}")
    short = decode_raw(first_raw(data["audio"], "clip_000001"), config(
        "audio_finetune", data["audio"], "data.source=raw", "data.audio.pad_short=true"), 0)
    full = decode_raw(first_raw(data["audio"], "clip_000000"), config(
        "audio_finetune", data["audio"], "data.source=raw", "data.audio.pad_short=true"), 0)
    batch = Batch([short, full], {})
    mask = batch.audio_mask()
    assert mask.shape == (2, 157) and int(mask[0].sum()) == 62 and bool(mask[1].all())
    tower = Tower(load_fusion_config(TINY).audio)
    objective = FlowMatchingObjective(cfg.objective, torch.zeros(1, 4096), torch.Generator().manual_seed(0))
    latents = [torch.randn(157, 20), torch.randn(157, 20)]
    nb = objective.prepare(None, latents, [torch.ones(2, 4096)] * 2, torch.float32, mask)
    stage = AudioStage(cfg, tower)
    streams = stage.streams(nb)
    pred = [t.clone() for t in nb.audio_target]
    pred[0][62:] += 3.0  # errors on the padding only
    assert float(stage.loss(nb, streams, {"audio": pred}).loss) == 0.0
    pred[0][:62] += 1.0  # errors on the short clip's real latents count, per element over real ones
    assert float(stage.loss(nb, streams, {"audio": pred}).loss) == pytest.approx(62 / (62 + 157))
    # Without the mask the padding would count: the wiring is what keeps it out.
    unmasked = objective.prepare(None, latents, [torch.ones(2, 4096)] * 2, torch.float32)
    pred = [t.clone() for t in unmasked.audio_target]
    pred[0][62:] += 3.0
    assert float(stage.loss(unmasked, stage.streams(unmasked), {"audio": pred}).loss) > 0.0
