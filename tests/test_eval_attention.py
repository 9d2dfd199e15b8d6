"""Cross-attention maps recomputed by forward hooks on a tiny fusion model, and their renderings."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ovi.config import load_fusion_config
from ovi.eval.attention import (audio_to_video_time, record_cross_attention, render_overlays, render_time_matrix,
                                video_heatmaps)
from ovi.models.fusion import FusionModel
from ovi.models.stream import Stream

REPO = Path(__file__).resolve().parents[1]
GRID = (3, 2, 2)  # latent [48, 3, 4, 4] with 1x2x2 patches
AUDIO_LEN = 9


@pytest.fixture(scope="module")
def model() -> FusionModel:
    torch.manual_seed(0)
    m = FusionModel(load_fusion_config(REPO / "configs/model/tiny.yaml")).eval()
    with torch.no_grad():
        for tower in (m.video_model, m.audio_model):
            tower.head.head.weight.normal_(std=0.02)
    return m


def streams(model: FusionModel) -> tuple[Stream, Stream]:
    g = torch.Generator().manual_seed(1)
    cv, ca = model.cfg.video, model.cfg.audio
    video = [torch.randn(cv.in_dim, 3, 4, 4, generator=g)]
    audio = [torch.randn(AUDIO_LEN, ca.in_dim, generator=g)]
    t = torch.tensor([500.0])
    return (Stream(video, t, [torch.randn(5, cv.text_dim, generator=g)]),
            Stream(audio, t, [torch.randn(5, ca.text_dim, generator=g)]))


def test_maps_are_distributions_and_leave_the_output_unchanged(model):
    v, a = streams(model)
    with torch.no_grad():
        plain = model(v, a)
        with record_cross_attention(model, blocks=[0, 1]) as maps:
            hooked = model(v, a)
    torch.testing.assert_close(hooked[0][0], plain[0][0])
    assert sorted(maps.audio_to_video) == [0, 1]
    a2v, v2a = maps.mean("audio_to_video"), maps.mean("video_to_audio")
    assert a2v.shape == (1, AUDIO_LEN, 12) and v2a.shape == (1, 12, AUDIO_LEN)
    torch.testing.assert_close(a2v.sum(-1), torch.ones(1, AUDIO_LEN))
    assert not model.audio_model.blocks[0].cross_attn._forward_hooks  # hooks removed on exit


def test_zero_keys_give_uniform_attention(model):
    """Known answer: with the cross-modal key projection zeroed every logit is equal (RoPE rotates zeros
    to zeros), so each audio token attends uniformly to the 12 video tokens."""
    v, a = streams(model)
    k = model.audio_model.blocks[0].cross_attn.k_fusion
    saved = k.weight.detach().clone(), k.bias.detach().clone()
    with torch.no_grad():
        k.weight.zero_()
        k.bias.zero_()
        with record_cross_attention(model, blocks=[0]) as maps:
            model(v, a)
        k.weight.copy_(saved[0])
        k.bias.copy_(saved[1])
    torch.testing.assert_close(maps.audio_to_video[0], torch.full((1, AUDIO_LEN, 12), 1 / 12))


def test_time_matrix_heatmaps_and_renders(model, tmp_path):
    v, a = streams(model)
    with torch.no_grad(), record_cross_attention(model) as maps:
        model(v, a)
    probs = maps.mean()[0]
    matrix = audio_to_video_time(probs, GRID)
    assert matrix.shape == (AUDIO_LEN, 3) and np.allclose(matrix.sum(-1), 1.0, atol=1e-5)
    heat = video_heatmaps(probs, GRID)
    assert heat.shape == (3, 2, 2) and np.allclose(heat.max(axis=(1, 2)), 1.0)
    assert render_time_matrix(matrix, tmp_path / "diag.png").stat().st_size > 0
    frames = np.full((9, 32, 32, 3), 80, np.uint8)
    written = render_overlays(frames, heat, tmp_path / "overlay", fps=24)
    assert len(written) == 4 and written[-1].suffix == ".mp4"


def test_attention_cli_probes_a_generated_clip_and_writes_the_maps(tmp_path):
    """`ovi-eval attention` on an ovi-generate clip (tiny random preset): the prompt comes from the sidecar, the
    maps are written, and the aligned mass is a share of attention; bad input fails with one line, before loading."""
    import json

    from ovi.cli.generate import main as generate
    from ovi.eval.cli import main as ovi_eval

    assert generate(["--config", "tiny_cpu", f"output_dir={tmp_path}", "num_steps=2"]) == 0
    (clip,) = tmp_path.glob("*.mp4")
    out = tmp_path / "att"
    assert ovi_eval(["attention", str(clip), "--config", "tiny_cpu", "--blocks", "0", "--out", str(out)]) == 0
    summary = json.loads((out / "attention.json").read_text())
    assert summary["blocks"] == [0] and 0.0 <= summary["aligned_mass"] <= 1.0
    assert 0.0 < summary["uniform_mass"] < 1.0
    for name in ("audio_to_video_time.png", "video_to_audio_time.png", "attention_frame000.png", "attention.mp4"):
        assert (out / name).is_file(), name
    with pytest.raises(SystemExit, match="this model has blocks"):
        ovi_eval(["attention", str(clip), "--config", "tiny_cpu", "--blocks", "99", "--out", str(out)])
    clip.with_suffix(".json").unlink()
    with pytest.raises(SystemExit, match="give --prompt"):
        ovi_eval(["attention", str(clip), "--config", "tiny_cpu"])


def test_aligned_mass_is_one_on_the_time_diagonal():
    from ovi.eval.clip_attention import WINDOW, aligned_latent_frame, aligned_mass

    aligned = aligned_latent_frame(157, 31)
    diagonal = np.zeros((157, 31))
    diagonal[np.arange(157), aligned] = 1.0
    assert aligned_mass(diagonal) == 1.0
    assert aligned_mass(np.full((157, 31), 1 / 31)) <= (2 * WINDOW + 1) / 31
