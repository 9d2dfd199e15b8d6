"""Samplers: reference schedules, solver arithmetic, and a replay of the golden sampling loops."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ovi.sampling import SOLVERS, FlowSampler, guidance, make_samplers, make_scheduler

SCHEDULES_FILE = "sampler_schedules.json"


def _reference_schedules(reference_dir: Path) -> list[dict]:
    return json.loads((reference_dir / SCHEDULES_FILE).read_text())["schedules"]


def test_every_reference_schedule_is_reproduced(reference_dir: Path) -> None:
    schedules = _reference_schedules(reference_dir)
    assert {s["solver"] for s in schedules} == set(SOLVERS)
    for ref in schedules:
        name = f"{ref['solver']} N={ref['steps']} shift={ref['shift']}"
        sampler = FlowSampler(ref["solver"], ref["steps"], ref["shift"])
        assert str(sampler.timesteps.dtype) == f"torch.{ref['timesteps_dtype']}", name
        assert str(sampler.sigmas.dtype) == f"torch.{ref['sigmas_dtype']}", name
        assert sampler.timesteps.tolist() == ref["timesteps"], name
        ref_sigmas = torch.tensor(ref["sigmas"], dtype=torch.float64)
        assert sampler.sigmas.shape == ref_sigmas.shape, name
        assert (sampler.sigmas.double() - ref_sigmas).abs().max() <= 1e-6, name


def test_unipc_solver_config_is_the_reference_one(reference_dir: Path) -> None:
    ref = next(s for s in _reference_schedules(reference_dir) if s["solver"] == "unipc")["scheduler_config"]
    cfg = make_scheduler("unipc", 4, 5.0).config
    for key in ("solver_order", "prediction_type", "predict_x0", "solver_type", "lower_order_final",
                "final_sigmas_type", "num_train_timesteps"):
        assert cfg[key] == ref[key], key


def test_schedule_factory_leaves_global_rng_alone() -> None:
    # the reference calls torch.manual_seed(4) in its factory; ours must not
    state = torch.get_rng_state()
    for solver in SOLVERS:
        make_scheduler(solver, 5, 5.0)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("solver", SOLVERS)
def test_two_step_denoise_of_a_point_mass_lands_on_it(solver: str) -> None:
    # For data concentrated at x0 the exact flow is v(x, sigma) = (x - x0) / sigma; every solver must
    # follow it to x0 (first-order steps are exact on this field, higher orders too).
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    x = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    video, audio = make_samplers(solver, num_steps=2, shift=5.0)
    x_start = x.clone()
    for k, t in enumerate(video.timesteps):
        sigma = video.sigmas[k].double()
        v = (x - x0) / sigma
        if k == 0:
            expected_first = x + (video.sigmas[1].double() - sigma) * v
        x = video.step(v, t, x)
        if k == 0:
            assert torch.allclose(x, expected_first, atol=1e-6), "first step is not the Euler/order-1 update"
    assert torch.isfinite(x).all()
    assert (x - x0).abs().max() <= 1e-5, f"{solver}: ended {float((x - x0).abs().max()):.3g} from x0"
    assert not torch.equal(x, x_start)
    assert len(audio) == 2 and torch.equal(audio.timesteps, video.timesteps)


def test_last_unipc_step_returns_the_x0_prediction_exactly() -> None:
    gen = torch.Generator().manual_seed(1)
    sampler = FlowSampler("unipc", 3, 5.0)
    x = torch.randn(2, 48, 3, 4, 4, generator=gen).bfloat16()
    for k, t in enumerate(sampler.timesteps):
        v = torch.randn(x.shape, generator=gen).bfloat16()
        x0_pred = x - sampler.sigmas[k] * v
        x = sampler.step(v, t, x)
        assert x.dtype == torch.bfloat16
    assert torch.equal(x, x0_pred)


def test_steps_out_of_order_are_refused_and_reset_restarts() -> None:
    sampler = FlowSampler("unipc", 2, 5.0)
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="expects timestep 999"):
        sampler.step(x, sampler.timesteps[1], x)
    sampler.step(x, sampler.model_timestep(0, batch_size=2), x)
    sampler.step(x, sampler.timesteps[1], x)
    with pytest.raises(RuntimeError, match="reset"):
        sampler.step(x, sampler.timesteps[1], x)
    sampler.reset()
    sampler.step(x, 999, x)


def test_model_timestep_has_the_model_dtype() -> None:
    assert FlowSampler("unipc", 4).model_timestep(1, 3).tolist() == [937, 937, 937]
    assert FlowSampler("unipc", 4).model_timestep(0).dtype == torch.int64
    assert FlowSampler("dpm++", 4).model_timestep(0).dtype == torch.int64
    assert FlowSampler("euler", 4).model_timestep(0).dtype == torch.float32


def test_unknown_solver_and_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match="unipc, euler, dpm"):
        make_scheduler("ddim", 4, 5.0)
    with pytest.raises(ValueError, match="num_steps"):
        make_scheduler("unipc", 0, 5.0)


def test_guidance_formula_and_dtype() -> None:
    pos = torch.tensor([1.0, 2.0]).bfloat16()
    neg = torch.tensor([0.5, 4.0]).bfloat16()
    out = guidance(pos, neg, 4.0)
    assert out.dtype == torch.bfloat16
    assert out.float().tolist() == [2.5, -4.0]


# ---- golden replay: the scheduler + guidance arithmetic alone, fed the golden per-step predictions ----


def _load_sampling(tiny_fusion_dir: Path) -> tuple[dict, dict, dict]:
    cases = json.loads((tiny_fusion_dir / "config.json").read_text())["sampling"]
    inputs = load_file(tiny_fusion_dir / "sampling_inputs.safetensors")
    outputs = load_file(tiny_fusion_dir / "sampling_outputs.safetensors")
    return cases, inputs, outputs


def test_golden_sampling_loops_replay_bitwise(tiny_fusion_dir: Path) -> None:
    """Feed the golden model predictions; every next-step input and the final latents must match exactly.

    Per tiny_fusion_a/README.md: guidance in bf16, one scheduler per modality, and in i2v latent frame 0 is
    overwritten with ``first_frame_latent`` before every step and after the loop.
    """
    cases, inputs, outputs = _load_sampling(tiny_fusion_dir)
    assert cases, "no sampling cases in config.json"
    for case, spec in cases.items():
        st = spec["settings"]
        video_sampler, audio_sampler = make_samplers(st["solver"], st["steps"], st["shift"])
        assert video_sampler.timesteps.tolist() == spec["schedule"]["timesteps"], case
        first_frame = inputs.get(f"{case}.first_frame_latent") if st["i2v"] else None
        latents = {"video": inputs[f"{case}.video_noise"], "audio": inputs[f"{case}.audio_noise"]}
        samplers = {"video": video_sampler, "audio": audio_sampler}
        scales = {"video": st["video_guidance_scale"], "audio": st["audio_guidance_scale"]}
        for k in range(st["steps"]):
            if first_frame is not None:
                latents["video"] = torch.cat([first_frame, latents["video"][:, 1:]], dim=1)
            t = video_sampler.model_timestep(k)
            golden_t = outputs[f"{case}.step{k}.t"]
            assert t.dtype == golden_t.dtype and torch.equal(t, golden_t), f"{case} step {k} t"
            for mod in ("video", "audio"):
                where = f"{case} step {k} {mod}"
                assert torch.equal(latents[mod], outputs[f"{case}.step{k}.{mod}_in"]), f"{where}: input differs"
                pred = guidance(
                    outputs[f"{case}.step{k}.pred_{mod}_pos"], outputs[f"{case}.step{k}.pred_{mod}_neg"], scales[mod]
                )
                latents[mod] = samplers[mod].step(pred, t, latents[mod])
        if first_frame is not None:
            latents["video"] = torch.cat([first_frame, latents["video"][:, 1:]], dim=1)
        for mod in ("video", "audio"):
            golden = outputs[f"{case}.final_{mod}_latent"]
            assert latents[mod].dtype == golden.dtype, f"{case} final {mod} dtype"
            assert torch.equal(latents[mod], golden), f"{case} final {mod} latent differs"
