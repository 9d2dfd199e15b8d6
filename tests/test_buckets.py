"""Aspect-ratio / duration buckets, padded audio with its mask, caption windows."""
from __future__ import annotations

import math
import random

import pytest
import torch

from train.data.buckets import (BucketBatcher, Spoken, bucket_for, bucket_frames, bucket_size,
                                caption_window, pad_audio)
from train.strategies import stream_mse
from ovi.config import load_fusion_config
from ovi.models.tower import Tower
from ovi.models.stream import Stream
from pathlib import Path

AREA_720 = 720 * 720
TINY = Path(__file__).resolve().parents[1] / "configs/model/tiny.yaml"


def test_buckets_keep_aspect_ratio_within_one_patch_at_the_area() -> None:
    rng = random.Random(0)
    for _ in range(500):
        h, w = rng.randint(240, 2160), rng.randint(240, 2160)
        bh, bw = bucket_size(h, w, AREA_720)
        assert bh % 32 == 0 and bw % 32 == 0
        ideal_h, ideal_w = math.sqrt(AREA_720 * h / w), math.sqrt(AREA_720 * w / h)
        assert abs(bh - ideal_h) <= 16 and abs(bw - ideal_w) <= 16  # nearest multiple: within half a patch
    assert bucket_size(1080, 1920, AREA_720) == (544, 960) and bucket_size(720, 720, 960 * 960) == (960, 960)


def test_duration_buckets_take_the_longest_length_that_fits() -> None:
    assert bucket_frames(150, [121, 241]) == 121 and bucket_frames(300, [121, 241]) == 241
    assert bucket_frames(100, [121]) is None
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        bucket_frames(100, [120])


def test_batches_never_mix_buckets() -> None:
    rng = random.Random(1)
    clips = [(rng.choice([(720, 1280), (1280, 720), (720, 720), (1080, 1920)]), rng.choice([130, 250])) for _ in range(200)]
    items = [(bucket_for(h, w, n, AREA_720, [121, 241]), i) for i, ((h, w), n) in enumerate(clips)]
    seen = 0
    for bucket, batch in BucketBatcher(4, drop_last=False).batches(items):
        assert {items[i][0] for i in batch} == {bucket}
        seen += len(batch)
    assert seen == len(items)
    full = list(BucketBatcher(4).batches(items))
    assert all(len(b) == 4 for _, b in full) and len({b for b, _ in full}) > 4


def test_short_audio_is_padded_and_the_padding_is_outside_the_loss() -> None:
    latent = torch.randn(100, 20)
    padded, mask = pad_audio(latent, 157)
    assert padded.shape == (157, 20) and int(mask.sum()) == 100 and torch.equal(padded[:100], latent)
    tower = Tower(load_fusion_config(TINY).audio)
    stream = Stream([padded], torch.tensor([500.0]), [torch.zeros(2, 4096)], loss_mask=mask[None])
    target = padded.clone()
    pred = target.clone()
    pred[100:] += 5.0  # errors on the padding do not count
    assert float(stream_mse(tower, [pred], [target], stream)) == 0.0
    pred[:100] += 1.0
    assert float(stream_mse(tower, [pred], [target], stream)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="crop it first"):
        pad_audio(torch.randn(200, 20), 157)


CAPTION = "A man at a desk says <S>hello there, how are you today<E> and smiles. Audio: a calm male voice"
WORDS = [Spoken(0.2, 0.6, "hello"), Spoken(0.6, 1.0, "there,"), Spoken(2.1, 2.3, "how"), Spoken(2.3, 2.5, "are"),
         Spoken(2.5, 2.7, "you"), Spoken(2.7, 3.2, "today")]


def test_a_crop_keeps_only_the_words_said_inside_it() -> None:
    text, dropped = caption_window(CAPTION, 2.0, 4.0, WORDS)
    assert "<S>how are you today<E>" in text and "hello" not in text and not dropped
    text, _ = caption_window(CAPTION, 4.0, 6.0, WORDS)
    assert "<S>" not in text and "hello" not in text and text.endswith("Audio: a calm male voice")


def test_without_word_times_a_crop_drops_the_speech() -> None:
    text, dropped = caption_window(CAPTION, 0.0, 2.0, None)
    assert dropped and "<S>" not in text and "hello" not in text and "smiles" in text
    assert caption_window("No speech. Audio: rain", 0.0, 1.0, None) == ("No speech. Audio: rain", False)
