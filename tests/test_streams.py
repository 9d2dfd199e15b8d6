"""The per-modality stream: layout methods, prompt-constant preparation, per-token timesteps, conditioning
streams, and a denoising loop that only knows a velocity function."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ovi.config import load_fusion_config
from ovi.denoise import Conditioning, GuidanceConfig, SpeedConfig, denoise, guided_velocity, sample
from ovi.models.fusion import FusionModel
from ovi.models.stream import Stream, clean_prefix_timesteps, token_loss_mask

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model() -> FusionModel:
    torch.manual_seed(0)
    m = FusionModel(load_fusion_config(REPO / "configs/model/tiny.yaml"))
    with torch.no_grad():  # the reference init zeroes the heads; random heads make outputs depend on inputs
        for tower in (m.video_model, m.audio_model):
            tower.head.head.weight.normal_(std=0.02)
    return m.eval()


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    video = [torch.randn(48, 3, 4, 6, generator=g)]
    audio = [torch.randn(14, 20, generator=g)]
    ctx = [torch.randn(5, 4096, generator=g)]
    return video, audio, ctx


def test_patchify_inverts_unpatchify_in_the_heads_layout(model: FusionModel) -> None:
    vm, am = model.video_model, model.audio_model
    video, audio, _ = _inputs()
    patches = vm.patchify(video[0])
    assert patches.shape == (3 * 2 * 3, 1 * 2 * 2 * 48) and vm.num_tokens(video[0]) == 18
    assert vm.tokens_per_unit(video[0]) == 6 and am.tokens_per_unit(audio[0]) == 1
    assert torch.equal(vm.unpatchify(patches, vm.grid_size(video[0])), video[0])
    assert torch.equal(am.unpatchify(am.patchify(audio[0]), am.grid_size(audio[0])), audio[0])
    # token 1 is (frame 0, row 0, column 1): latent pixels [:, 0, 0:2, 2:4], channels last within a patch
    assert torch.equal(patches[1].view(2, 2, 48).permute(2, 0, 1), video[0][:, 0, 0:2, 2:4])


def test_prepared_text_and_rope_give_the_same_numbers(model: FusionModel) -> None:
    video, audio, ctx = _inputs()
    t = torch.tensor([600])
    vm, am = model.video_model, model.audio_model
    with torch.no_grad():
        raw = model(Stream(video, t, ctx), Stream(audio, t, ctx))
        prepared = model(
            Stream(video, t, vm.prepare_text(ctx), rope=vm.rope_table(video)),
            Stream(audio, t, am.prepare_text(ctx), rope=am.rope_table(audio)),
        )
    assert torch.equal(raw[0][0], prepared[0][0]) and torch.equal(raw[1][0], prepared[1][0])


def test_a_rope_table_for_another_length_is_refused(model: FusionModel) -> None:
    video, audio, ctx = _inputs()
    other = model.audio_model.rope_table([torch.randn(9, 20)])
    with pytest.raises(ValueError, match="stream.rope"):
        model(Stream(video, torch.tensor([1]), ctx), Stream(audio, torch.tensor([1]), ctx, rope=other))


def test_per_token_timesteps_and_a_separate_timestep_per_modality(model: FusionModel) -> None:
    video, audio, ctx = _inputs()
    vm = model.video_model
    t = torch.tensor([800])
    t_tok = clean_prefix_timesteps(t, [vm.num_tokens(video[0])], [vm.tokens_per_unit(video[0])], clean_units=1)
    assert t_tok.shape == (1, 18) and (t_tok[0, :6] == 0).all() and (t_tok[0, 6:] == 800).all()
    with torch.no_grad():
        shared = model(Stream(video, t, ctx), Stream(audio, t, ctx))
        i2v = model(Stream(video, t_tok, ctx), Stream(audio, t, ctx))
        split = model(Stream(video, t, ctx), Stream(audio, torch.tensor([200]), ctx))
    assert not torch.allclose(shared[0][0], i2v[0][0])  # the clean frame changes the video's modulation
    assert not torch.allclose(shared[1][0], split[1][0])  # the audio tower sees its own timestep
    mask = token_loss_mask(t_tok, [18])
    assert mask.sum() == 12 and not mask[0, :6].any()


def test_a_clean_conditioning_stream_informs_the_other_tower(model: FusionModel) -> None:
    """V2A as data: the video stream is all t = 0, the audio noisy; the audio output depends on the video."""
    video, audio, ctx = _inputs()
    other_video = [torch.randn_like(video[0])]
    t0, t = torch.tensor([0]), torch.tensor([700])
    with torch.no_grad():
        _, a1 = model(Stream(video, t0, ctx), Stream(audio, t, ctx))
        _, a2 = model(Stream(other_video, t0, ctx), Stream(audio, t, ctx))
        alone = model(None, Stream(audio, t, ctx))[1]
    assert not torch.allclose(a1[0], a2[0])
    assert alone[0].shape == a1[0].shape and not torch.allclose(alone[0], a1[0])


def test_the_loop_integrates_any_velocity_function() -> None:
    """A point mass at x0 has the exact flow v = (x - x0) / sigma; the loop must land on x0 without knowing it."""
    g = torch.Generator().manual_seed(2)
    x0_v, x0_a = torch.randn(4, 2, 2, 2, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    prefix = torch.randn(4, 1, 2, 2, generator=g, dtype=torch.float64)
    calls = []

    def velocity(x_v: torch.Tensor, x_a: torch.Tensor, t: torch.Tensor):
        sigma = float(t) / 1000
        calls.append(x_v[:, :1].clone())
        return (x_v - x0_v) / sigma, (x_a - x0_a) / sigma

    x_v, x_a = sample(velocity, torch.randn(4, 2, 2, 2, generator=g, dtype=torch.float64),
                      torch.randn(5, 3, generator=g, dtype=torch.float64), "euler", 3, 5.0, video_prefix=prefix,
                      progress=False)
    assert len(calls) == 3 and all(torch.equal(c, prefix) for c in calls)  # the clean prefix is in place at each call
    assert torch.equal(x_v[:, :1], prefix)
    assert (x_v[:, 1:] - x0_v[:, 1:]).abs().max() < 1e-4 and (x_a - x0_a).abs().max() < 1e-4


def test_prompt_constant_work_runs_once_per_generation(model: FusionModel) -> None:
    video, audio, ctx = _inputs()
    text = Conditioning(ctx[0], ctx[0] * 0.5, ctx[0] * 0.25)
    cfg = GuidanceConfig("unipc", num_steps=3, shift=5.0, slg_layer=1)
    calls = {"text": 0}
    hooks = [tower.text_embedding.register_forward_hook(lambda *_: calls.__setitem__("text", calls["text"] + 1))
             for tower in (model.video_model, model.audio_model)]
    try:
        with torch.no_grad():
            denoise(model, video[0], audio[0], text, cfg, progress=False)
    finally:
        for h in hooks:
            h.remove()
    assert calls["text"] == 4  # (positive, negative) x (video, audio), not per step

    with torch.no_grad():  # and the closure is the same arithmetic as two plain model calls
        velocity = guided_velocity(model, text, cfg, speed=SpeedConfig(batch_cfg=False, cache_text_kv=False))  # as the model computes
        v_v, v_a = velocity(video[0], audio[0], torch.tensor([500]))
        pos = model(Stream(video, torch.tensor([500]), [text.positive]), Stream(audio, torch.tensor([500]), [text.positive]))
        neg = model(Stream(video, torch.tensor([500]), [text.video_negative]),
                    Stream(audio, torch.tensor([500]), [text.audio_negative]), slg_layer=1)
    assert torch.equal(v_v, neg[0][0] + cfg.video_scale * (pos[0][0] - neg[0][0]))
    assert torch.equal(v_a, neg[1][0] + cfg.audio_scale * (pos[1][0] - neg[1][0]))
