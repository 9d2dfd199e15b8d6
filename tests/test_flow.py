"""Training and sampling agree through one flow object (ovi.flow.FLOW): the objective's noised input, target and
timestep are what every solver integrates, and the solvers' shifted grids are FLOW.shift."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ovi.flow import FLOW, FlowMatching
from ovi.sampling import SOLVERS, FlowSampler, make_scheduler
from train.config import ObjectiveConfig, SigmaConfig
from train.objective import FlowMatchingObjective, sample_sigma

SHIFT = 5.0


def test_formulas_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(20, 7, generator=g), torch.randn(20, 7, generator=g)
    xs = FLOW.noise(x, eps, 0.25)
    v = FLOW.velocity(x, eps)
    torch.testing.assert_close(FLOW.to_data(xs, v, 0.25), x)
    torch.testing.assert_close(xs + 0.75 * v, eps)  # the straight path ends at the noise
    assert (FLOW.noise(x, eps, 0.0) == x).all() and (FLOW.noise(x, eps, 1.0) == eps).all()
    assert FLOW.timestep(0.25) == 250.0 and FlowMatching(num_train_timesteps=10).timestep(0.5) == 5.0


def test_shift_keeps_type_and_endpoints() -> None:
    grid = np.linspace(0, 1, 11)
    shifted = FLOW.shift(grid, SHIFT)
    assert shifted.dtype == np.float64 and shifted[0] == 0.0 and shifted[-1] == 1.0
    assert (np.diff(shifted) > 0).all() and (shifted >= grid).all()
    torch.testing.assert_close(FLOW.shift(torch.from_numpy(grid), SHIFT), torch.from_numpy(shifted))
    assert (FLOW.shift(grid, 1.0) == grid).all()


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_follows_the_training_path_with_the_exact_velocity(solver: str) -> None:
    """Fed the training target eps - x, each step lands on FLOW.noise(x, eps, next sigma) and the last on x."""
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(4, 5, 6, generator=g), torch.randn(4, 5, 6, generator=g)
    sampler = FlowSampler(solver, 12, SHIFT)
    sample = FLOW.noise(x, eps, float(sampler.sigmas[0]))
    for k in range(len(sampler)):
        sample = sampler.step(FLOW.velocity(x, eps), sampler.timesteps[k], sample)
        torch.testing.assert_close(sample, FLOW.noise(x, eps, float(sampler.sigmas[k + 1])), atol=2e-5, rtol=0)
    torch.testing.assert_close(sample, x, atol=2e-5, rtol=0)


def test_sampler_grids_are_the_flow_shift_and_timestep() -> None:
    n, t = 20, FLOW.num_train_timesteps
    dpm = make_scheduler("dpm++", n, SHIFT)
    sigmas = FLOW.shift(np.linspace(1, 0, n + 1)[:n], SHIFT)
    assert (dpm.sigmas[:-1].numpy() == sigmas.astype(np.float32)).all()
    assert (dpm.timesteps.numpy() == FLOW.timestep(sigmas).astype(np.int64)).all()
    # diffusers shifts UniPC's grid itself (flow_shift): the same map, the release's int64 truncation.
    unipc = make_scheduler("unipc", n, SHIFT)
    expected = FLOW.shift(np.linspace(1 - 1 / t, 0, n + 1)[:-1], SHIFT)
    np.testing.assert_allclose(unipc.sigmas[:-1].numpy(), expected, rtol=1e-6)
    diff = unipc.timesteps.double() - FLOW.timestep(unipc.sigmas[:-1].double())
    assert float(diff.abs().max()) < 1.0


def test_objective_noises_and_conditions_as_the_flow_says() -> None:
    obj = FlowMatchingObjective(ObjectiveConfig(sigma=SigmaConfig(shift=SHIFT)), torch.zeros(1, 4096),
                                torch.Generator().manual_seed(0))
    audio = [torch.randn(9, 20, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    nb = obj.prepare(None, audio, [torch.ones(2, 4096)] * 3, torch.float32)
    torch.testing.assert_close(nb.t, FLOW.timestep(nb.sigma))
    for x, xs, v, s in zip(audio, nb.audio_in, nb.audio_target, nb.sigma):
        torch.testing.assert_close(FLOW.to_data(xs, v, float(s)), x)  # what the sampler's x0 prediction does
    base = sample_sigma(SigmaConfig(), 64, torch.Generator().manual_seed(2))
    shifted = sample_sigma(SigmaConfig(shift=SHIFT), 64, torch.Generator().manual_seed(2))
    torch.testing.assert_close(shifted, FLOW.shift(base.double(), SHIFT).float())
