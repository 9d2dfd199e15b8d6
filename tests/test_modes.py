"""Conditioning modes: which tokens are clean (t = 0, no loss) in training, and what generation keeps."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ovi.config import load_fusion_config
from ovi.denoise import Conditioning, GuidanceConfig
from ovi.flow import FLOW
from ovi.models.fusion import FusionModel
from ovi.modes import CleanTokens, Given, denoise_given, given_velocity
from ovi.models.stream import Stream
from train.config import ObjectiveConfig, load_train_config
from train.objective import FlowMatchingObjective
from train.strategies import FusionStage

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs/model/tiny.yaml"
PER_FRAME = 4  # (4/2) * (4/2) video tokens per latent frame of a [48, 3, 4, 4] latent


@pytest.fixture(scope="module")
def fusion() -> FusionModel:
    torch.manual_seed(0)
    model = FusionModel(load_fusion_config(TINY))
    for tower in (model.video_model, model.audio_model):
        torch.nn.init.normal_(tower.head.head.weight, std=0.02)
    return model.eval()


def _streams(fusion: FusionModel, mode: str, **kw):
    cfg = load_train_config(REPO / "configs/train/fusion.yaml", [f"model={TINY}", "run_dir=/tmp/unused",
                                                                 "data.shards=[/tmp/unused]", f"objective.mode={mode}",
                                                                 *(f"objective.{k}={v}" for k, v in kw.items())])
    objective = FlowMatchingObjective(ObjectiveConfig(loss_weight_video=0.85, loss_weight_audio=0.15, mode=mode, **kw),
                                      torch.zeros(1, 4096), torch.Generator().manual_seed(0))
    video, audio = [torch.randn(48, 3, 4, 4)], [torch.randn(6, 20)]
    nb = objective.prepare(video, audio, [torch.ones(2, 4096)], torch.float32)
    strategy = FusionStage(cfg, fusion)
    return strategy, nb, strategy.streams(nb), video, audio


# mode -> (clean video tokens, clean audio tokens) of a 3-frame video (12 tokens) and 6 audio latents
CASES = {"t2av": (0, 0), "i2av": (PER_FRAME, 0), "v2a": (12, 0), "a2v": (0, 6), "video_extension": (2 * PER_FRAME, 0),
         "audio_extension": (0, 2)}


@pytest.mark.parametrize("mode", sorted(CASES))
def test_each_mode_cleans_its_tokens_and_leaves_them_out_of_the_loss(fusion, mode: str) -> None:
    extra = {"first_frame_clean_prob": 1.0} if mode == "i2av" else {"prefix_units": 2} if "extension" in mode else {}
    strategy, nb, streams, video, audio = _streams(fusion, mode, **extra)
    for name, clean, total, x, x_in in (("video", CASES[mode][0], 12, video[0], nb.video_in[0]),
                                        ("audio", CASES[mode][1], 6, audio[0], nb.audio_in[0])):
        s = streams[name]
        t = s.t if s.t.ndim == 2 else s.t[:, None].expand(1, total)
        assert (t[0, :clean] == 0).all() and (t[0, clean:] == nb.t[0]).all(), name
        trained = total if s.loss_mask is None else int(s.loss_mask.sum())
        assert trained == total - clean, name
        units = clean // PER_FRAME if name == "video" else clean
        given = x_in[:, :units] if name == "video" else x_in[:units]
        expect = x[:, :units] if name == "video" else x[:units]
        assert torch.equal(given, expect), name  # the conditioning is the clean latent itself
    preds = {"video": [nb.video_target[0].clone()], "audio": [nb.audio_target[0].clone()]}
    out = strategy.loss(nb, streams, preds)
    assert float(out.loss) == 0.0
    # v2a trains on audio alone (and a2v on video alone), with the full weight rather than 0.15 of it
    assert set(out.parts) == {"v2a": {"loss_audio"}, "a2v": {"loss_video"}}.get(mode, {"loss_video", "loss_audio"})


def test_t2a_trains_the_fusion_models_audio_tower_alone(fusion) -> None:
    cfg = load_train_config(REPO / "configs/train/fusion.yaml", [f"model={TINY}", "run_dir=/tmp/unused",
                                                                 "data.shards=[/tmp/unused]", "objective.mode=t2a"])
    strategy = FusionStage(cfg, fusion)
    assert strategy.modalities == ("audio",) and not strategy.has_video
    objective = FlowMatchingObjective(cfg.objective, torch.zeros(1, 4096), torch.Generator().manual_seed(0))
    nb = objective.prepare(None, [torch.randn(6, 20)], [torch.ones(2, 4096)], torch.float32)
    out = strategy.forward(fusion, strategy.streams(nb))
    assert set(out) == {"audio"} and out["audio"][0].shape == (6, 20)


def test_audio_stages_refuse_video_conditioned_modes() -> None:
    with pytest.raises(ValueError, match="needs stage=fusion"):
        load_train_config(REPO / "configs/train/audio_pretrain.yaml", [f"model={TINY}", "run_dir=/tmp/x",
                                                                       "data.shards=[/tmp/x]", "objective.mode=v2a"])


def test_v2a_batches_mix_only_into_t2av_training() -> None:
    base = [f"model={TINY}", "run_dir=/tmp/x", "data.shards=[/tmp/x]", "objective.v2a_prob=0.5"]
    cfg = load_train_config(REPO / "configs/train/fusion.yaml", base)
    assert cfg.objective.v2a_prob == 0.5
    with pytest.raises(ValueError, match="mixes v2a batches into t2av training"):
        load_train_config(REPO / "configs/train/fusion.yaml", [*base, "objective.mode=a2v"])
    with pytest.raises(ValueError, match="v2a_sigma_shift must be > 0"):
        load_train_config(REPO / "configs/train/fusion.yaml", [*base, "objective.v2a_sigma_shift=0"])


def _text() -> Conditioning:
    g = torch.Generator().manual_seed(1)
    return Conditioning(*(torch.randn(n, 4096, generator=g) * 0.1 for n in (5, 2, 3)))


@pytest.mark.parametrize("conditioning", ["clean", "noised"])
def test_v2a_and_a2v_keep_the_given_modality_exactly(fusion, conditioning: str) -> None:
    g = torch.Generator().manual_seed(2)
    xv, xa = torch.randn(48, 3, 4, 4, generator=g), torch.randn(11, 20, generator=g)
    clean_v, clean_a = torch.randn(48, 3, 4, 4, generator=g), torch.randn(11, 20, generator=g)
    guide = GuidanceConfig("unipc", num_steps=3, shift=5.0, video_scale=4.0, audio_scale=3.0, slg_layer=1)
    with torch.no_grad():
        v, a = denoise_given(fusion, xv, xa, _text(), guide, Given(video=clean_v), conditioning, progress=False)
        assert torch.equal(v, clean_v) and not torch.equal(a, xa)
        v2, a2 = denoise_given(fusion, xv, xa, _text(), guide, Given(audio=clean_a), conditioning, progress=False)
        assert torch.equal(a2, clean_a) and not torch.equal(v2, xv)


def test_clean_conditioning_sets_t_zero_on_given_tokens_only(fusion) -> None:
    seen = []

    class Spy:
        video_model, audio_model = fusion.video_model, fusion.audio_model

        def __call__(self, video, audio, **kw):
            seen.append((video.t, audio.t))
            return [video.latents[0]], [audio.latents[0]]

    net = CleanTokens(Spy(), Given(video=torch.zeros(48, 1, 4, 4), audio=torch.zeros(4, 20)))
    t = torch.tensor([500.0])
    net(Stream([torch.randn(48, 3, 4, 4)], t, [torch.zeros(2, 4096)]), Stream([torch.randn(11, 20)], t, [torch.zeros(2, 4096)]))
    vt, at = seen[0]
    assert (vt[0, :PER_FRAME] == 0).all() and (vt[0, PER_FRAME:] == 500).all()
    assert (at[0, :4] == 0).all() and (at[0, 4:] == 500).all()


def test_zero_shot_feeds_the_ground_truth_noised_to_the_current_level() -> None:
    clean = torch.randn(11, 20)
    calls = []
    velocity = given_velocity(lambda v, a, t: (calls.append((a.clone(), t)) or (v, a)), Given(audio=clean), "noised", 7)
    velocity(torch.zeros(48, 1, 2, 2), torch.zeros(11, 20), torch.tensor([250.0]))
    velocity(torch.zeros(48, 1, 2, 2), torch.zeros(11, 20), torch.tensor([750.0]))
    eps = torch.randn(clean.shape, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(calls[0][0], FLOW.noise(clean, eps, 0.25)) and torch.allclose(calls[1][0], FLOW.noise(clean, eps, 0.75))
