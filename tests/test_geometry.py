"""The clip geometry: the released length table, and the codecs, configs and presets agreeing with it."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ovi.codecs.audio_codec import AudioCodec
from ovi.codecs.audio_vae import LATENT_CHANNELS, TIME_STRIDE, AudioVAE
from ovi.codecs.mel import HOP_LENGTH, SAMPLE_RATE, MelFrontEnd
from ovi.codecs.video_vae import VideoVAE, build_wan22_vae
from ovi.components import TINY_AUDIO_VAE_HIDDEN, TINY_VIDEO_VAE
from data_pipeline.config import AUDIO_FINETUNE_S, DataPipelineConfig
from ovi.config import InferenceConfig, load_config
from ovi.geometry import (
    AUDIO_LATENT_CHANNELS,
    AUDIO_LATENT_RATE,
    AUDIO_SAMPLES_PER_LATENT,
    FIVE_SECOND,
    FPS,
    MEL_FRAMES_PER_LATENT,
    MEL_HOP,
    RELEASED_AUDIO_LATENTS,
    SIZE_MULTIPLE,
    TEN_SECOND,
    VAE_SPATIAL_FACTOR,
    VAE_TEMPORAL_FACTOR,
    VIDEO_LATENT_CHANNELS,
    ClipGeometry,
    audio_latents_for_samples,
    check_size,
    snap,
)

REPO = Path(__file__).resolve().parents[1]


def test_released_table() -> None:
    assert (FIVE_SECOND.num_frames, FIVE_SECOND.latent_frames, FIVE_SECOND.audio_latents) == (121, 31, 157)
    assert (TEN_SECOND.num_frames, TEN_SECOND.latent_frames, TEN_SECOND.audio_latents) == (241, 61, 314)
    assert (FIVE_SECOND.audio_samples, TEN_SECOND.audio_samples) == (80_384, 160_768)
    assert ClipGeometry.for_frames(241) == TEN_SECOND


def test_no_single_rounding_gives_the_released_pair() -> None:
    # Why the table is listed: floor gets 5 s right and 10 s wrong, round the other way about.
    exact = {f: f / FPS * AUDIO_LATENT_RATE for f in RELEASED_AUDIO_LATENTS}
    assert {f: math.floor(x) for f, x in exact.items()} != RELEASED_AUDIO_LATENTS
    assert {f: round(x) for f, x in exact.items()} != RELEASED_AUDIO_LATENTS


@pytest.mark.parametrize("num_frames", [1, 5, 9, 25, 49, 97, 121, 145, 241, 289])
def test_audio_covers_the_video_to_within_one_latent(num_frames: int) -> None:
    g = ClipGeometry.for_frames(num_frames)
    clip_samples = round(g.duration_s * g.sample_rate)
    assert abs(g.audio_samples - clip_samples) < AUDIO_SAMPLES_PER_LATENT
    assert audio_latents_for_samples(g.audio_samples) == g.audio_latents


def test_other_lengths_follow_the_latent_rate() -> None:
    assert ClipGeometry.for_frames(25).audio_latents == 32  # floor(25 / 24 * 31.25) = floor(32.55)
    assert audio_latents_for_samples(12 * SAMPLE_RATE) == 375  # a 12 s pretraining clip
    with pytest.raises(ValueError, match="num_frames"):
        ClipGeometry.for_frames(0)


def test_codec_constants_agree_with_the_geometry() -> None:
    assert SAMPLE_RATE == ClipGeometry.for_frames(121).sample_rate
    assert (HOP_LENGTH, TIME_STRIDE) == (MEL_HOP, MEL_FRAMES_PER_LATENT)
    assert HOP_LENGTH * TIME_STRIDE == AUDIO_SAMPLES_PER_LATENT
    assert LATENT_CHANNELS == AUDIO_LATENT_CHANNELS


@pytest.mark.parametrize("geometry", [FIVE_SECOND, TEN_SECOND], ids=["5s", "10s"])
def test_audio_codec_encodes_audio_samples_to_audio_latents(geometry: ClipGeometry) -> None:
    assert AudioCodec.num_latents(geometry.audio_samples) == geometry.audio_latents
    assert AudioCodec.num_samples(geometry.audio_latents) == geometry.audio_samples
    # The real front end and a (tiny) VAE: exactly audio_latents, and one sample less loses a latent.
    torch.manual_seed(0)
    vae = AudioVAE(hidden_dim=TINY_AUDIO_VAE_HIDDEN).normalize_weights().eval()
    codec = AudioCodec(vae, vocoder=None)
    with torch.no_grad():
        for n, want in [(geometry.audio_samples, geometry.audio_latents),
                        (geometry.audio_samples - 1, geometry.audio_latents - 1)]:
            wave = 0.1 * torch.randn(1, n)
            assert MelFrontEnd()(wave).shape[-1] == n // MEL_HOP
            assert codec.encode(wave).shape[-1] == want == AudioCodec.num_latents(n)


def test_video_vae_agrees_with_the_geometry() -> None:
    vae = VideoVAE(build_wan22_vae(TINY_VIDEO_VAE))
    assert (vae.temporal_compression, vae.spatial_compression) == (VAE_TEMPORAL_FACTOR, VAE_SPATIAL_FACTOR)
    assert vae.z_dim == VIDEO_LATENT_CHANNELS
    for g in (FIVE_SECOND, TEN_SECOND, ClipGeometry.for_frames(9)):
        assert vae.latent_frames(g.num_frames) == g.latent_frames
    g = ClipGeometry.for_frames(9)
    with torch.no_grad():
        latent = vae.encode(torch.zeros(1, 3, g.num_frames, 32, 64))
    assert tuple(latent.shape[2:]) == (g.latent_frames, *g.latent_hw(32, 64))


def test_sizes_and_token_counts() -> None:
    assert SIZE_MULTIPLE == VAE_SPATIAL_FACTOR * 2
    assert FIVE_SECOND.latent_hw(704, 1280) == (44, 80)
    assert FIVE_SECOND.tokens_per_frame(704, 704) == 22 * 22
    assert FIVE_SECOND.video_tokens(704, 704) == 31 * 484 == 15_004  # train/README.md's figure
    assert TEN_SECOND.video_tokens(960, 960) == 61 * 900
    assert (snap(720), snap(703.9), snap(10)) == (704, 672, 32)  # floored, at least one multiple
    check_size(704, 1280)
    with pytest.raises(ValueError, match="704x704"):
        check_size(720, 720)
    with pytest.raises(ValueError, match="multiples of 32"):
        FIVE_SECOND.video_tokens(100, 64)


@pytest.mark.parametrize("preset", sorted((REPO / "configs/inference").glob("*.yaml")), ids=lambda p: p.stem)
def test_inference_presets_sample_the_released_lengths(preset: Path) -> None:
    cfg = load_config(InferenceConfig, preset)
    assert cfg.geometry.num_frames in RELEASED_AUDIO_LATENTS
    # The checkpoint the preset names was trained on this clip (tiny_cpu mimics a 5 s variant).
    assert cfg.geometry == (TEN_SECOND if cfg.variant.endswith("_10s") else FIVE_SECOND)


def test_data_pipeline_cuts_the_training_clip() -> None:
    split = DataPipelineConfig().split
    assert (split.num_frames, split.fps, split.sample_rate) == (FIVE_SECOND.num_frames, FPS, FIVE_SECOND.sample_rate)
    assert DataPipelineConfig().pack.side_multiple == SIZE_MULTIPLE
    # Audio-only fine-tuning clips hold at least the audio window the fine-tuning stage takes (157 latents).
    assert audio_latents_for_samples(round(AUDIO_FINETUNE_S * SAMPLE_RATE)) == FIVE_SECOND.audio_latents
