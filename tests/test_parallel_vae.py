"""Memory-bounded video decode: temporal chunks handed out as they are decoded (exact), spatial tiles (blended)."""
from __future__ import annotations

import pytest
import torch
from helpers import rel_l2

from ovi.codecs.video_vae import VideoVAE, build_wan22_vae

# The reduced widths of the video_vae_a fixture: the release structure (patchify, 16x / 4x compression).
SMALL = {"base_dim": 5, "decoder_base_dim": 8}


@pytest.fixture(scope="module")
def vae() -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE(build_wan22_vae(SMALL))


@pytest.fixture(scope="module")
def latent() -> torch.Tensor:
    return torch.randn(1, 48, 4, 3, 5, generator=torch.Generator().manual_seed(1))  # 13 frames of 48 x 80


def test_chunked_decode_equals_the_whole_decode(vae, latent):
    whole = vae.decode(latent)
    chunks = list(vae.decode_chunks(latent, chunk_frames=2))
    assert [c.shape[2] for c in chunks] == [1 + 4, 4 + 4]  # first latent frame -> 1 video frame, others 4
    assert torch.equal(torch.cat(chunks, 2), whole)
    on_host = vae.decode(latent, chunk_frames=1, out_device="cpu")
    assert on_host.shape == (1, 3, 13, 48, 80) and torch.equal(on_host, whole)


def test_tiled_decode_runs_in_tiles_and_stays_close(vae, latent, monkeypatch):
    whole = vae.decode(latent)
    calls = []
    original = vae.model.tiled_decode
    monkeypatch.setattr(vae.model, "tiled_decode", lambda *a, **k: calls.append(1) or original(*a, **k))
    vae.enable_tiling(tile=32, stride=16)  # 48 x 80 pixels: 3 x 5 overlapping tiles
    try:
        tiled = vae.decode(latent)
        with pytest.raises(ValueError, match="disable tiling"):
            next(vae.decode_chunks(latent))
    finally:
        vae.model.disable_tiling()
    assert calls and tiled.shape == whole.shape and tiled.abs().max() <= 1
    # The first tile's unblended corner (stride 16 px) is that tile decoded alone: each tile sees only its latents.
    alone = vae.decode(latent[..., :2, :2])
    assert rel_l2(tiled[..., :16, :16], alone[..., :16, :16]) < 1e-6  # conv kernels differ by size: rounding
    assert rel_l2(tiled, whole) > 0  # and so differs from the whole-frame decode (measured in the README)
