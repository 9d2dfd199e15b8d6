"""A crop never keeps a transcript it no longer contains (issue 11): audio windows of a long clip get the words
said inside them (with word times in the sample's json) or lose their <S>...<E> (without); precompute encodes
each window's own caption; precomputed chunks with speech are never cropped in latent space."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import load, save

from train.config import load_train_config
from train.data.latents import LATENTS_EXT
from train.data.loader import decode_precomputed
from train.data.media import prepare_clip, window_caption
from train.data.stream import RawSample
from train.encoders import build_encoders
from train.precompute import encode_clip

REPO = Path(__file__).resolve().parents[1]
SR = 16_000
CAPTION = "A man talks in a quiet room <S>one two three four five six<E> Audio: a calm male voice"
WORDS = [{"start": 0.5 + 2.0 * i, "end": 1.5 + 2.0 * i, "text": w}
         for i, w in enumerate(["one", "two", "three", "four", "five", "six"])]  # one word every 2 s, 0.5..11.5 s


def finetune_config(*overrides: str):
    return load_train_config(REPO / "configs/train/audio_finetune.yaml",
                             ["data.shards=[unused]", "encoders.kind=random", *overrides])


def audio_files(seconds: float, meta: dict) -> dict[str, bytes]:
    buf = io.BytesIO()
    sf.write(buf, np.random.default_rng(0).uniform(-0.3, 0.3, int(seconds * SR)).astype(np.float32), SR, format="WAV")
    return {"wav": buf.getvalue(), "json": json.dumps(meta).encode()}


def test_windows_keep_only_the_words_said_inside_them():
    clips = prepare_clip("long", audio_files(12.0, {"caption": CAPTION, "spoken": WORDS}), finetune_config(), None)
    assert [c.audio_start for c in clips] == [0, 80_384, 160_768]  # 5.04 s windows; the 1.96 s tail padded later
    assert [c.caption for c in clips] == [
        "A man talks in a quiet room <S>one two<E> Audio: a calm male voice",
        "A man talks in a quiet room <S>four five<E> Audio: a calm male voice",  # "three" (4.5-5.5 s) is cut
        "A man talks in a quiet room <S>six<E> Audio: a calm male voice"]


def test_without_word_times_a_crop_drops_the_speech_and_the_whole_clip_keeps_it():
    clips = prepare_clip("long", audio_files(12.0, {"caption": CAPTION}), finetune_config(), None)
    assert {c.caption for c in clips} == {"A man talks in a quiet room Audio: a calm male voice"}
    whole = prepare_clip("short", audio_files(5.0, {"caption": CAPTION}), finetune_config(), None)
    assert [c.caption for c in whole] == [CAPTION]  # padded to the window, nothing cut
    # A 121-frame clip's sound (80,667 samples) in its 80,384-sample window is the whole clip.
    assert window_caption({"caption": CAPTION}, 0, 80_384, 80_667) == CAPTION
    assert "<S>" not in window_caption({"caption": CAPTION}, 0, 80_384, 2 * 80_384)


def test_precompute_encodes_each_window_with_its_own_caption():
    cfg = finetune_config()
    enc = build_encoders(cfg.encoders, False, torch.device("cpu"))
    samples = list(encode_clip("long", audio_files(12.0, {"caption": CAPTION, "spoken": WORDS}), cfg, enc,
                               torch.device("cpu"), torch.float32))
    texts = [load(s.members[LATENTS_EXT])["text"] for s in samples]
    captions = [s.meta["caption"] for s in samples]
    assert captions[0].endswith("<S>one two<E> Audio: a calm male voice") and len(set(captions)) == 3
    assert not torch.equal(texts[0], texts[1]) and not torch.equal(texts[1], texts[2])
    assert torch.equal(texts[0], enc.text.encode([captions[0]])[0])


def test_precomputed_chunks_with_speech_are_not_cropped_in_latent_space():
    cfg = finetune_config("data.source=precomputed")

    def raw(caption: str) -> RawSample:
        meta = json.dumps({"caption": caption}).encode()
        return RawSample("long_c000", {LATENTS_EXT: save({"text": torch.ones(3, 4096), "audio": torch.randn(375, 20)}),
                                       "json": meta}, 0, "mem", {})

    assert decode_precomputed(raw(CAPTION), cfg, 0) is None  # a 12 s chunk with speech, a 5.04 s window
    cropped = decode_precomputed(raw("Rain on a tin roof. Audio: steady rain"), cfg, 0)
    assert cropped.audio.shape == (157, 20)
