"""The flow-matching objective: noise levels, the velocity target, the timestep scale the sampler uses,
shared sigma / independent noise in fusion, condition dropout, loss weights."""
from __future__ import annotations

import math

import pytest
import torch

from ovi.flow import FLOW
from ovi.sampling import make_scheduler
from train.config import ObjectiveConfig, SigmaConfig
from train.objective import (FlowMatchingObjective, add_noise, combine_losses, motion_weights, onset_weights,
                             sample_sigma)

NULL = torch.full((3, 4096), 7.0)


def objective(**kw) -> FlowMatchingObjective:
    cfg = ObjectiveConfig(loss_weight_video=0.85, loss_weight_audio=0.15, **kw)
    return FlowMatchingObjective(cfg, NULL, torch.Generator().manual_seed(0))


def test_uniform_sigma_covers_the_unit_interval() -> None:
    s = sample_sigma(SigmaConfig(), 20_000, torch.Generator().manual_seed(0))
    assert s.min() > 0 and s.max() <= 1
    assert abs(float(s.mean()) - 0.5) < 0.01
    assert abs(float((s < 0.25).float().mean()) - 0.25) < 0.01


def test_shift_is_the_samplers_time_shift() -> None:
    base = sample_sigma(SigmaConfig(), 64, torch.Generator().manual_seed(1))
    shifted = sample_sigma(SigmaConfig(shift=5.0), 64, torch.Generator().manual_seed(1))
    expected = 5.0 * base / (1 + 4.0 * base)
    torch.testing.assert_close(shifted, expected)
    assert (shifted >= base).all()


def test_logit_normal_median_is_sigmoid_of_mean() -> None:
    s = sample_sigma(SigmaConfig(sampling="logit_normal", logit_mean=-1.0), 20_000, torch.Generator().manual_seed(0))
    assert abs(float(s.median()) - 1 / (1 + math.e)) < 0.01


def test_target_is_noise_minus_data_and_sampler_recovers_x0() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(48, 2, 4, 4)
    xs, v = add_noise(x0, 0.3, g)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(xs, 0.7 * x0 + 0.3 * eps)
    torch.testing.assert_close(v, eps - x0)
    torch.testing.assert_close(xs - 0.3 * v, x0)  # the flow sampler's x0 = x - sigma * v


def test_model_timestep_is_1000_sigma_as_the_sampler_feeds_it() -> None:
    obj = objective()
    nb = obj.prepare(None, [torch.zeros(5, 20)] * 4, [torch.ones(2, 4096)] * 4, torch.float32)
    torch.testing.assert_close(nb.t, FLOW.timestep(nb.sigma))
    sched = make_scheduler("unipc", 50, 5.0)
    # The release truncates 1000*sigma to an integer: the sampler's t and sigma agree to within one unit.
    diff = sched.timesteps.double() - FLOW.timestep(sched.sigmas[:-1].double())
    assert float(diff.abs().max()) < 1.0


def test_fusion_shares_sigma_and_draws_independent_noise() -> None:
    obj = objective()
    video = [torch.zeros(48, 2, 2, 2) for _ in range(3)]
    audio = [torch.zeros(16, 20) for _ in range(3)]  # 320 values, the video's first 320 would match if shared
    nb = obj.prepare(video, audio, [torch.ones(2, 4096)] * 3, torch.float32)
    for i in range(3):
        s = float(nb.sigma[i])
        eps_v = nb.video_in[i] / s  # clean latents are 0, so x_sigma = sigma * eps
        eps_a = nb.audio_in[i] / s
        torch.testing.assert_close(nb.video_target[i], eps_v)
        torch.testing.assert_close(nb.audio_target[i], eps_a)
        assert not torch.allclose(eps_v.flatten()[: eps_a.numel()], eps_a.flatten())
    assert len(set(nb.sigma.tolist())) == 3  # per sample, not per batch


def test_independent_prob_gives_that_share_of_samples_their_own_audio_sigma() -> None:
    video = [torch.randn(48, 2, 2, 2) for _ in range(200)]
    audio = [torch.randn(16, 20) for _ in range(200)]
    text = [torch.ones(2, 4096)] * 200
    shared = objective().prepare(video, audio, text, torch.float32)
    assert shared.audio_sigma is None and shared.audio_t is shared.t  # the paper's shared level, RNG untouched
    nb = objective(sigma=SigmaConfig(independent_prob=0.5)).prepare(video, audio, text, torch.float32)
    own = nb.audio_sigma != nb.sigma
    assert 0.35 < float(own.float().mean()) < 0.65
    torch.testing.assert_close(nb.audio_t, FLOW.timestep(nb.audio_sigma))
    for i in (int(own.nonzero()[0]), int((~own).nonzero()[0])):  # x_sigma = x + sigma * (eps - x), per modality
        torch.testing.assert_close(nb.audio_in[i], audio[i] + float(nb.audio_sigma[i]) * nb.audio_target[i])
        torch.testing.assert_close(nb.video_in[i], video[i] + float(nb.sigma[i]) * nb.video_target[i])
    audio_only = objective(sigma=SigmaConfig(independent_prob=1.0)).prepare(None, audio, text, torch.float32)
    assert audio_only.audio_sigma is None  # one modality: nothing to decouple


def test_v2a_prob_makes_that_share_of_batches_v2a_with_shifted_audio_sigma() -> None:
    video = [torch.randn(48, 3, 2, 2) for _ in range(4)]
    audio = [torch.randn(16, 20) for _ in range(4)]
    text = [torch.ones(2, 4096)] * 4
    obj = objective(v2a_prob=0.5, v2a_sigma_shift=30.0)
    batches = [obj.prepare(video, audio, text, torch.float32) for _ in range(200)]
    v2a = [nb for nb in batches if nb.video_clean_frames == 3]
    plain = [nb for nb in batches if nb.video_clean_frames == 0]
    assert len(v2a) + len(plain) == 200 and 70 < len(v2a) < 130
    for nb in v2a[:3]:  # the whole video given clean, the audio noised at the batch's (shifted) sigma
        for x, xs in zip(video, nb.video_in):
            torch.testing.assert_close(xs, x)
        assert nb.audio_sigma is None and nb.audio_t is nb.t
    high = torch.cat([nb.sigma for nb in v2a])
    assert float(high.median()) > 0.9 > float(torch.cat([nb.sigma for nb in plain]).median())  # shift 30: ~0.97
    off = objective().prepare(video, audio, text, torch.float32)
    again = objective(v2a_prob=0.0, v2a_sigma_shift=30.0).prepare(video, audio, text, torch.float32)
    torch.testing.assert_close(off.sigma, again.sigma)  # at 0 nothing is drawn: old runs keep their random stream


def test_onset_weights_peak_where_a_sound_starts() -> None:
    quiet = torch.full((40, 80), -1.0)
    assert torch.equal(onset_weights(quiet, 4.0), torch.ones(40))  # no onset: plain MSE
    loud = quiet.clone()
    loud[10:20] = 2.0  # a sound from latent 10 to 19: one rise, at 10 (the fall at 20 is no onset)
    w = onset_weights(loud, 4.0)
    assert float(w.mean()) == pytest.approx(1.0)
    assert int(w.argmax()) == 10 and w[9] == w[11]
    assert float(w[9]) == pytest.approx(float(w[10] + w[0]) / 2)  # the onset spread half to each side
    assert float(w[20]) == pytest.approx(float(w[0]))  # the fall weighs as the background
    # 1 + strength x onset / mean onset: the one onset (3, spread 1.5 either side) sums to 6 over 40 latents
    assert float(w[10] / w[0]) == pytest.approx(1 + 4.0 * 3 / (6 / 40), rel=1e-4)


def test_audio_onset_weight_reaches_the_batch_and_changes_no_draw() -> None:
    audio = [torch.randn(16, 20) for _ in range(2)]
    text = [torch.ones(2, 4096)] * 2
    plain = objective().prepare(None, audio, text, torch.float32)
    weighted = objective(audio_onset_weight=4.0).prepare(None, audio, text, torch.float32)
    assert plain.audio_weight is None
    for x, w in zip(audio, weighted.audio_weight):
        torch.testing.assert_close(w, onset_weights(x, 4.0))
    torch.testing.assert_close(weighted.sigma, plain.sigma)  # same random stream: only the loss changes
    for a, b in zip(weighted.audio_in, plain.audio_in):
        torch.testing.assert_close(a, b)


def test_motion_weights_peak_where_the_picture_changes() -> None:
    still = torch.full((48, 6, 4, 4), 0.5)
    assert torch.equal(motion_weights(still, 2.0), torch.ones(6, 4, 4))  # nothing moves: plain MSE
    flash = still.clone()
    flash[:, 3, 1, 2] = 2.0  # one position lights up in latent frame 3 only
    w = motion_weights(flash, 2.0)
    assert float(w.mean()) == pytest.approx(1.0)
    assert int(w.flatten().argmax()) == (3 * 4 + 1) * 4 + 2
    assert float(w[2, 1, 2]) == float(w[4, 1, 2]) == pytest.approx(float(w[3, 1, 2] + w[0, 0, 0]) / 2)
    assert float(w[3, 1, 1]) == float(w[0, 0, 0])  # the still neighbour weighs as the backdrop
    # 1 + strength x motion / mean motion: 1.5 at the flash and 0.75 in the frames either side, over 96 positions
    assert float(w[3, 1, 2] / w[0, 0, 0]) == pytest.approx(1 + 2.0 * 1.5 / (3.0 / 96), rel=1e-4)


def test_video_motion_weight_reaches_the_batch_and_changes_no_draw() -> None:
    video = [torch.randn(48, 3, 4, 4) for _ in range(2)]
    audio = [torch.randn(16, 20) for _ in range(2)]
    text = [torch.ones(2, 4096)] * 2
    plain = objective().prepare(video, audio, text, torch.float32)
    weighted = objective(video_motion_weight=2.0).prepare(video, audio, text, torch.float32)
    assert plain.video_weight is None and weighted.audio_weight is None
    for x, w in zip(video, weighted.video_weight):
        torch.testing.assert_close(w, motion_weights(x, 2.0))
    torch.testing.assert_close(weighted.sigma, plain.sigma)
    for a, b in zip(weighted.video_in + weighted.audio_in, plain.video_in + plain.audio_in):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_text_dropout_extremes(p: float) -> None:
    obj = objective(text_dropout_video=p, text_dropout_audio=p)
    ctx = [torch.ones(2, 4096)] * 8
    nb = obj.prepare(None, [torch.zeros(4, 20)] * 8, ctx, torch.float32)
    for c in nb.video_context + nb.audio_context:
        assert torch.equal(c, NULL if p == 1.0 else ctx[0])


def test_text_dropout_rate_independent_and_joint() -> None:
    n = 4000
    ctx = [torch.ones(1, 4096)] * n
    audio = [torch.zeros(1, 20)] * n
    nb = objective(text_dropout_video=0.1, text_dropout_audio=0.3).prepare(None, audio, ctx, torch.float32)
    dv = torch.tensor([c.shape[0] == 3 for c in nb.video_context])
    da = torch.tensor([c.shape[0] == 3 for c in nb.audio_context])
    assert abs(float(dv.float().mean()) - 0.1) < 0.02 and abs(float(da.float().mean()) - 0.3) < 0.03
    assert 0.01 < float((dv & da).float().mean()) < 0.05  # independent: ~0.03 both dropped
    nb = objective(text_dropout_video=0.2, text_dropout_joint=True).prepare(None, audio, ctx, torch.float32)
    dv = torch.tensor([c.shape[0] == 3 for c in nb.video_context])
    da = torch.tensor([c.shape[0] == 3 for c in nb.audio_context])
    assert torch.equal(dv, da) and abs(float(dv.float().mean()) - 0.2) < 0.03


def test_first_frame_clean_keeps_frame_zero() -> None:
    obj = objective(first_frame_clean_prob=1.0)
    x = torch.randn(48, 3, 2, 2)
    nb = obj.prepare([x], [torch.zeros(4, 20)], [torch.ones(1, 4096)], torch.float32)
    assert nb.video_clean_frames == 1  # its t = 0 and its loss are the strategy's (tests/test_train_strategies.py)
    torch.testing.assert_close(nb.video_in[0][:, 0], x[:, 0])


def test_loss_weights_come_from_the_config() -> None:
    cfg = ObjectiveConfig(loss_weight_video=0.85, loss_weight_audio=0.15)
    total = combine_losses(cfg, torch.tensor(2.0), torch.tensor(4.0))
    assert float(total) == pytest.approx(0.85 * 2 + 0.15 * 4)
    assert float(combine_losses(cfg, None, torch.tensor(4.0))) == 4.0
