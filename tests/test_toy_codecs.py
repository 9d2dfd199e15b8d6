"""The toy model's parts that are measured, not trained: the fixed codecs have the release latents' shapes, invert
exactly on what they keep and keep the world's events; the Griffin-Lim vocoder keeps onsets where the mel has
them; the unfused baseline's starting point really has no audio-video exchange; the attention-alignment measure
gives 1 on a diagonal map and the uniform share on a flat one."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovi.codecs.mel import MelFrontEnd
from ovi.config import load_fusion_config
from ovi.imaging import frames_to_pixels
from ovi.media import to_uint8_frames
from ovi.models.fusion import FusionModel
from ovi.models.stream import Stream
from ovi.presets import REPO_ROOT
from ovi.toy.attention import WINDOW, aligned_latent_frame, aligned_mass
from ovi.toy.clip import SAMPLE_RATE
from ovi.toy.fixed_codecs import MelPoolCodec, PixelVideoCodec, fit_audio_codec, fit_video_codec, load_fixed_codec
from ovi.toy.hearing import detect_onsets
from ovi.toy.init_fusion import fusion_init
from ovi.toy.metrics import match_events, score_clip
from ovi.toy.vocoder import GriffinLimVocoder
from ovi.toy.world import make_clip

TOY_MODEL = REPO_ROOT / "configs/model/toy.yaml"


def test_griffin_lim_vocoder_keeps_every_onset_within_10_ms():
    audio = make_clip("bounce", [3, 0]).audio  # float32 [80667]
    wave = GriffinLimVocoder()(MelFrontEnd()(torch.from_numpy(audio)[None]))[0, 0].numpy()
    assert wave.shape[0] == (audio.shape[0] // 256) * 256 and np.abs(wave).max() <= 1.0
    share, offsets = match_events(detect_onsets(audio, SAMPLE_RATE), detect_onsets(wave, SAMPLE_RATE), 0.010)
    assert share == 1.0 and np.abs(offsets).max() < 0.005


def test_unfused_baseline_init_has_no_cross_modal_exchange(tmp_path):
    from safetensors.torch import save_file

    cfg = load_fusion_config(TOY_MODEL)
    torch.manual_seed(1)
    audio_tower = {k[len("audio_model."):]: v for k, v in FusionModel(cfg).state_dict().items()
                   if k.startswith("audio_model.") and "_fusion" not in k}
    save_file(audio_tower, tmp_path / "audio.safetensors")
    outputs = {}
    for unfused in (False, True):
        model = FusionModel(cfg).eval()
        model.load_state_dict(fusion_init(TOY_MODEL, tmp_path / "audio.safetensors", unfused=unfused))
        for tower in (model.video_model, model.audio_model):  # reference init zeroes the heads
            torch.nn.init.normal_(tower.head.head.weight, std=0.02)
        g = torch.Generator().manual_seed(0)
        video = [torch.randn(48, 3, 4, 4, generator=g)]
        text = [torch.randn(20, cfg.video.text_dim, generator=g)]
        t = torch.tensor([500.0])
        with torch.no_grad():
            runs = [model(Stream(video, t, text), Stream([torch.randn(13, cfg.audio.in_dim, generator=g)], t, text))[0][0]
                    for _ in range(2)]  # same video, two different audios
        outputs[unfused] = (runs[0] - runs[1]).abs().max().item()
    assert outputs[True] == 0.0  # video output independent of the audio: no exchange
    assert outputs[False] > 1e-4  # the fused init does exchange


def test_aligned_attention_mass_is_one_on_the_diagonal_and_uniform_share_on_a_flat_map():
    num_audio, num_f = 157, 31
    aligned = aligned_latent_frame(num_audio, num_f)
    assert aligned[0] == 0 and aligned[-1] == num_f - 1 and np.all(np.diff(aligned) >= 0)
    diagonal = np.zeros((num_audio, num_f))
    diagonal[np.arange(num_audio), aligned] = 1.0
    assert aligned_mass(diagonal) == 1.0
    flat = np.full((num_audio, num_f), 1.0 / num_f)
    inner = (2 * WINDOW + 1) / num_f
    assert inner * 0.9 < aligned_mass(flat) <= inner  # the ends of the clip have one neighbour only


def _pixels(frames_u8: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> [3, T, H, W] in [-1, 1]."""
    return frames_to_pixels(torch.from_numpy(frames_u8), None, None)


@pytest.fixture(scope="module")
def world_clips():
    return [make_clip(kind, [7, i]) for i, kind in enumerate(("bounce", "flash", "face", "bounce"))]


@pytest.fixture(scope="module")
def codecs(world_clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("codecs")
    mel = MelFrontEnd()
    video = fit_video_codec([_pixels(c.frames) for c in world_clips], out / "video_codec.json")
    audio = fit_audio_codec([mel(torch.from_numpy(c.audio)[None])[0] for c in world_clips], out / "audio_codec.json")
    return out, video, audio


def test_pixel_codec_has_the_wan22_latent_shape_and_inverts_the_pooled_frames(codecs, world_clips):
    _, codec, _ = codecs
    x = _pixels(world_clips[0].frames)[None]  # [1, 3, 121, 64, 64]
    z = codec.encode(x)
    assert z.shape == (1, 48, 31, 4, 4) and codec.spatial_compression == 16
    assert codec.latent_frames(121) == 31
    # Fitted on these clips: each channel normalised to mean 0, std 1 over them.
    assert abs(float(z.mean())) < 0.5 and 0.3 < float(z.std()) < 2.0
    pooled = F.avg_pool3d(x, (1, 8, 8))  # what the codec keeps
    assert torch.allclose(codec._frames(z), pooled, atol=1e-5)
    video = codec.decode(z)
    assert video.shape == x.shape and video.abs().max() <= 1.0
    chunks = list(codec.decode_chunks(z, chunk_frames=4))
    assert torch.equal(torch.cat(chunks, 2), video) and chunks[0].shape[2] == 1


def test_haar_basis_gives_what_moves_unit_variance_and_decodes_to_the_same_pixels(world_clips, tmp_path):
    """The Haar basis (``ovi-toy rebuild --video-basis haar_time``): the same pooled frames come back, but a clip's
    changes over time weigh far more in the normalised latent (the flow-matching loss) than in the plain pixel
    basis; files without a basis are pixels."""
    videos = [_pixels(c.frames) for c in world_clips]
    haar = fit_video_codec(videos, tmp_path / "haar.json", basis="haar_time")
    pixels = fit_video_codec(videos, tmp_path / "pixels.json")
    assert haar.basis == "haar_time" and pixels.basis == "pixels"
    for x in (videos[0][None], videos[1][None]):  # a bounce clip, a flash clip (lamps on a still wall)
        z_haar, z_pix = haar.encode(x), pixels.encode(x)
        assert torch.allclose(haar._frames(z_haar), pixels._frames(z_pix), atol=1e-5)
        # Each channel has unit variance over the fitted clips; the share of it that changes within a clip:
        change_haar, change_pix = (float(z[:, :, 1:].var(dim=2).mean()) for z in (z_haar, z_pix))
        assert change_haar > 5 * change_pix, (change_haar, change_pix)
    old = json.loads((tmp_path / "pixels.json").read_text())
    del old["basis"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert PixelVideoCodec.from_file(tmp_path / "old.json").basis == "pixels"
    with pytest.raises(ValueError, match="haar_time"):
        PixelVideoCodec([0.0] * 48, [1.0] * 48, basis="wavelet")


def test_mel_pool_codec_has_the_release_latent_rate_and_inverts_the_pooled_mel(codecs, world_clips):
    _, _, codec = codecs
    mel = MelFrontEnd()(torch.from_numpy(world_clips[1].audio)[None])  # [1, 80, 315]
    z = codec.encode(mel)
    assert z.shape == (1, 80, mel.shape[-1] // 2)  # 157 latents: the MMAudio VAE's rate
    pooled = mel[..., : 2 * z.shape[-1]].unflatten(-1, (-1, 2)).mean(-1)  # [1, 80, 157]
    assert torch.allclose(codec.decode(z), pooled.repeat_interleave(2, -1), atol=1e-5)


def test_fixed_codecs_keep_the_world_events_the_sync_metric_measures(codecs, world_clips):
    """Through both codecs and the vocoder, as generation decodes: the detections still match the ground truth."""
    _, video_codec, audio_codec = codecs
    vocoder = GriffinLimVocoder()
    audio_recall = []
    for clip in world_clips:
        video = video_codec.decode(video_codec.encode(_pixels(clip.frames)[None]))[0]
        frames = to_uint8_frames(video)
        mel = audio_codec.decode(audio_codec.encode(MelFrontEnd()(torch.from_numpy(clip.audio)[None])))
        wave = vocoder(mel)[0, 0].numpy()
        truth = score_clip(frames, wave, 24.0, SAMPLE_RATE, clip.truth).truth
        assert truth["kind_ok"], clip.truth["kind"]
        if clip.truth["kind"] == "face":
            assert truth["mouth_truth_corr"] > 0.9
        else:
            assert truth["visual_recall"] >= 0.8, truth
            audio_recall.append(truth["audio_recall"])
    # Pooled mel + Griffin-Lim: most onsets, not all (README: the toy's codecs; 0.88 over the world's event clips).
    assert min(audio_recall) >= 0.6 and np.mean(audio_recall) >= 0.75, audio_recall


def test_codec_files_load_by_kind_and_name_the_fix_when_wrong(codecs, tmp_path):
    out, _, _ = codecs
    assert isinstance(load_fixed_codec(out / "video_codec.json"), PixelVideoCodec)
    assert isinstance(load_fixed_codec(out / "audio_codec.json"), MelPoolCodec)
    with pytest.raises(ValueError, match="pixel_video"):
        PixelVideoCodec.from_file(out / "audio_codec.json")
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"codec": "nope"}))
    with pytest.raises(ValueError, match="unknown codec 'nope'"):
        load_fixed_codec(bad)
