"""The toy model's parts that are measured, not trained: the Griffin-Lim vocoder keeps onsets where the mel has
them, the unfused baseline's starting point really has no audio-video exchange, and the attention-alignment
measure gives 1 on a diagonal map and the uniform share on a flat one."""
from __future__ import annotations

import numpy as np
import torch

from ovi.codecs.mel import MelFrontEnd
from ovi.config import load_fusion_config
from ovi.models.fusion import FusionModel
from ovi.models.stream import Stream
from ovi.presets import REPO_ROOT
from ovi.toy.attention import WINDOW, aligned_latent_frame, aligned_mass
from ovi.toy.clip import SAMPLE_RATE
from ovi.toy.hearing import detect_onsets
from ovi.toy.init_fusion import fusion_init
from ovi.toy.metrics import match_events
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
            runs = [model(Stream(video, t, text), Stream([torch.randn(13, 20, generator=g)], t, text))[0][0]
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
