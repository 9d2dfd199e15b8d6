"""Synchformer / DeSync (``ovi.eval.synchformer``) on CPU: the released layout of the state dict, a strict
file round trip, the factorised attention's neighbourhoods, the preprocessing geometry, and the metric's whole
code path (mp4 -> segments -> tiny random Synchformer -> per-clip offsets -> report) on a synthetic clip.

The released weights cannot be fetched here, so nothing checks the numbers a trained model gives."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ovi.eval.clips import discover
from ovi.eval.registry import build_metric
from ovi.eval.report import markdown, write
from ovi.eval.run import score_clips
from ovi.eval.synchformer import WINDOW, DesyncMetric, Synchformer, load_synchformer, tiny_config
from ovi.eval.synchformer.preprocess import (AST_MEAN, AST_STD, audio_segments, mel_filters, resample_frames,
                                             video_segments)
from ovi.eval.synchformer.video import DividedAttention
from ovi.eval.weights import MissingWeights
from ovi.media import write_mp4

KEYS = Path(__file__).parent / "data" / "synchformer_keys.json"
TINY = tiny_config()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "synchformer_state_dict.pth"
    torch.save(Synchformer(TINY).state_dict(), path)
    return path


def _clip(folder: Path, name: str, seconds: float, fps: int = 24) -> Path:
    rng = np.random.default_rng(0)
    n = int(seconds * fps)
    frames = np.zeros((n, 48, 64, 3), np.uint8)
    for t in range(n):  # a square that flashes every second, with a click at each flash
        if t % fps < 3:
            frames[t, 12:36, 20:44] = 255
    audio = 0.01 * rng.standard_normal(int(seconds * 16_000)).astype(np.float32)
    for k in range(int(seconds)):
        audio[k * 16_000: k * 16_000 + 400] += 0.5
    return write_mp4(folder / f"{name}.mp4", frames, audio, fps=fps, sample_rate=16_000)


def test_release_state_dict_has_the_published_layout():
    """Names and shapes of the full-size model (built on the meta device) against the list in tests/data.
    Independently of that list: the per-module key counts and a few shapes read off the public code
    (v-iashin/Synchformer, hkchengrex/av-benchmark: MotionFormer divided_224_16x4, AST max_spec_t=66,
    GlobalTransformer n_layer=3 with a 198-row position table, 21 offset classes)."""
    with torch.device("meta"):
        model = Synchformer()
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert got == json.loads(KEYS.read_text())
    count = {p: sum(k.startswith(p) for k in got) for p in ("vfeat_extractor.", "afeat_extractor.", "transformer.")}
    # video: 3 tables + 2 patch convs (4) + 12 blocks * 18 + norm 2 + pooling layer 13
    # audio: embeddings 5 + 12 layers * 16 + layernorm 2 + pooling layer 13; offset transformer: 9 + 3 * 16 + 2
    assert count == {"vfeat_extractor.": 238, "afeat_extractor.": 212, "transformer.": 59} and len(got) == 513
    assert got["transformer.pos_emb_cfg.pos_emb"] == [1, 198, 768]
    assert got["afeat_extractor.ast.embeddings.position_embeddings"] == [1, 74, 768]
    assert got["vfeat_extractor.pos_embed"] == [1, 197, 768] and got["vfeat_extractor.temp_embed"] == [1, 8, 768]
    assert got["vfeat_extractor.patch_embed_3d.proj.weight"] == [768, 3, 2, 16, 16]
    assert got["afeat_extractor.ast.encoder.layer.11.attention.attention.query.weight"] == [768, 768]
    assert got["vfeat_extractor.spatial_attn_agg.self_attn.in_proj_weight"] == [2304, 768]
    assert got["transformer.blocks.2.mlp.2.weight"] == [768, 3072] and got["transformer.off_head.weight"] == [21, 768]


def test_state_dict_round_trips_strictly_through_the_file_loader(tiny_weights, tmp_path):
    torch.manual_seed(1)
    video, mel = torch.randn(2, 14, 16, 3, 32, 32), torch.randn(2, 14, 66, 128)
    ref = Synchformer(TINY)
    ref.load_state_dict(torch.load(tiny_weights))
    loaded = load_synchformer(tiny_weights, TINY)
    with torch.no_grad():
        logits = loaded(video, mel)
        assert logits.shape == (2, 21) and torch.equal(logits, ref.eval()(video, mel))
    authors = tmp_path / "24-01-04T16-39-21.pt"  # the authors' checkpoint wraps the state dict in "model"
    torch.save({"model": torch.load(tiny_weights), "epoch": 3}, authors)
    assert torch.equal(load_synchformer(authors, TINY).transformer.OFF_tok, ref.transformer.OFF_tok)
    bad = torch.load(tiny_weights)
    bad["transformer.extra"] = bad.pop("transformer.ln_f.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"1 missing \(first: \['transformer.ln_f.weight'\]\).*transformer.extra"):
        load_synchformer(tmp_path / "bad.pth", TINY)


def test_registry_names_the_weight_file_and_loads_strictly(tiny_weights):
    with pytest.raises(MissingWeights, match="synchformer_state_dict.pth.*MMAudio/releases"):
        build_metric("desync", {})
    with pytest.raises(MissingWeights, match="does not exist"):
        build_metric("desync", {"desync": "/nope/synchformer_state_dict.pth"})
    with pytest.raises(ValueError, match="of another shape"):  # the tiny file is not the released size
        build_metric("desync", {"desync": tiny_weights})


@pytest.mark.parametrize("along", ["time", "space"])
def test_divided_attention_mixes_only_its_own_frame_or_position(along):
    torch.manual_seed(0)
    frames, patches, d = 3, 4, 8
    attn = DividedAttention(d, heads=2)
    x = torch.randn(1, 1 + frames * patches, d)
    y = x.clone()
    y[0, 1 + 0 * patches + 1] += 1.0  # frame 0, patch 1
    with torch.no_grad():
        changed = (attn(y, frames, along) - attn(x, frames, along)).abs().amax(-1)[0] > 1e-6
    cls, grid = bool(changed[0]), changed[1:].view(frames, patches)
    expected = torch.zeros(frames, patches, dtype=torch.bool)
    if along == "time":
        expected[:, 1] = True
    else:
        expected[0, :] = True
    assert cls and torch.equal(grid, expected)


def test_preprocessing_geometry():
    assert WINDOW.offsets_s()[0] == -2.0 and WINDOW.offsets_s()[10] == 0.0 and WINDOW.offsets_s()[-1] == 2.0
    assert len(resample_frames(np.zeros((120, 2, 2, 3), np.uint8), 24.0)) == 125
    frames = np.random.default_rng(0).integers(0, 256, (120, 48, 64, 3), dtype=np.uint8)
    vid = video_segments(frames, 24.0, 32)
    assert vid.shape == (14, 16, 3, 32, 32) and vid.min() >= -1.0 and vid.max() <= 1.0
    audio = np.random.default_rng(1).standard_normal(80_000).astype(np.float32)
    mel = audio_segments(audio, 66, 128)
    assert mel.shape == (14, 66, 128) and torch.isfinite(mel).all()
    # 10240 samples give 65 STFT frames; the 66th is the zero padding, normalised like the log values
    assert torch.allclose(mel[:, 65], torch.full_like(mel[:, 65], -AST_MEAN / (2 * AST_STD)))
    assert audio_segments(audio[:10_000], 66, 128).shape[0] == 0


def test_mel_filters_are_htk_triangles():
    fb = mel_filters(16_000, 1024, 128)  # [513, 128]
    assert fb.shape == (513, 128) and fb.min() >= 0 and fb.max() <= 1
    hz = np.linspace(0, 8000, 513)
    centres = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 130)[1:-1] / 2595) - 1)
    peaks = hz[fb.argmax(0).numpy()]
    assert np.all(np.abs(peaks - centres) <= 8000 / 512)  # each triangle peaks at its HTK centre
    tone = np.sin(2 * np.pi * 1000 * np.arange(10_240) / 16_000).astype(np.float32)
    band = int(audio_segments(tone, 66, 128)[0, 30].argmax())
    assert abs(centres[band] - 1000) < 60


def test_desync_metric_runs_end_to_end_on_a_synthetic_mp4(tiny_weights, tmp_path):
    _clip(tmp_path, "000_flash_seed0", 5.5)
    _clip(tmp_path, "001_short_seed0", 3.0)  # shorter than one 4.8 s window
    metric = DesyncMetric(load_synchformer(tiny_weights, TINY))
    report = score_clips(discover(tmp_path), [metric])
    long, short = report.rows
    assert set(WINDOW.offsets_s()) >= {long["desync_offset_s_first"], long["desync_offset_s_last"]}
    assert all(1 / 21 <= long[f"desync_conf_{s}"] <= 1 for s in ("first", "last"))
    assert long["desync"] == pytest.approx(
        (abs(long["desync_offset_s_first"]) + abs(long["desync_offset_s_last"])) / 2)
    assert math.isnan(short["desync"]) and math.isnan(short["desync_conf_first"])
    agg = report.aggregate
    assert agg["desync_clips"] == 1 and agg["desync_clips_too_short"] == 1 and agg["desync"] == long["desync"]
    assert 0 <= agg["desync"] <= 2.0 and "| desync |" in markdown(report)
    paths = write(report, tmp_path / "eval")
    plots = paths["plots"]
    assert (plots / "hist_desync.png").exists() and (plots / "hist_desync_offset_s_first.png").exists()
