"""Flow-matching samplers exactly as the released Ovi drives them, built from diffusers' schedulers.

Ovi integrates ``dx/dsigma = v`` from pure noise (sigma ~ 1) to data (sigma = 0), with the model predicting
the flow ``v`` and ``x0 = x - sigma * v`` (the conventions of :mod:`ovi.flow`, which training shares).
Three solvers are exposed, each reproducing the schedule the reference's
``OviFusionEngine.get_scheduler_time_steps`` produces (``shared/reference/sampler_schedules.json``):

- ``"unipc"`` (the release default): diffusers ``UniPCMultistepScheduler`` in flow mode. Its default flow grid
  starts one training step too high, so the reference's un-shifted grid ``linspace(1 - 1/T, 0, N+1)[:-1]`` is
  passed explicitly; diffusers then shifts it and truncates ``sigma * T`` to int64 timesteps, bitwise equal
  to the reference's own ``FlowUniPCMultistepScheduler`` (steps included, in bf16).
- ``"euler"``: diffusers ``FlowMatchEulerDiscreteScheduler(shift=shift)``, the very class the reference uses.
  Its float32 timesteps start at 1000 and end at 24.41, because it shifts endpoints that are already shifted;
  that is the released behaviour, kept as is.
- ``"dpm++"``: diffusers ``DPMSolverMultistepScheduler`` (DPM-Solver++ 2M, midpoint) in flow mode, on the
  reference's ``get_sampling_sigmas`` grid ``shift(linspace(1, 0, N+1)[:N])`` with int64 timesteps.

One :class:`FlowSampler` per modality: video and audio are stepped independently on identical schedules,
because a multistep solver keeps a history of past predictions and the two latents must not share it.

Reproducibility: the reference's scheduler factory also calls ``torch.manual_seed(4)``, silently resetting
the global RNG each time a schedule is built. Nothing here touches global RNG state; every random draw of
the pipeline comes from an explicit ``torch.Generator`` instead.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from ovi.flow import FLOW

if TYPE_CHECKING:  # diffusers takes seconds to import; configs import this module only for its defaults
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler
    from diffusers.schedulers.scheduling_utils import SchedulerMixin as Scheduler  # timesteps set

SOLVERS = ("unipc", "euler", "dpm++")
SolverName = Literal["unipc", "euler", "dpm++"]

# The release's sampling defaults (Ovi's inference_fusion.yaml); InferenceConfig and GuidanceConfig use these.
DEFAULT_SOLVER: SolverName = "unipc"
DEFAULT_NUM_STEPS = 50
DEFAULT_SHIFT = 5.0
DEFAULT_VIDEO_GUIDANCE = 4.0
DEFAULT_AUDIO_GUIDANCE = 3.0
DEFAULT_SLG_LAYER = 11  # fusion block skipped on the negative branch; 0 disables skip-layer guidance
DEFAULT_VIDEO_NEGATIVE_PROMPT = "jitter, bad hands, blur, distortion"
DEFAULT_AUDIO_NEGATIVE_PROMPT = "robotic, muffled, echo, distorted"


def make_scheduler(name: str, num_steps: int, shift: float = DEFAULT_SHIFT) -> Scheduler:
    """A fresh diffusers scheduler for solver ``name`` with the reference's ``num_steps`` schedule set.

    ``scheduler.timesteps`` holds what the model receives (int64 for unipc / dpm++, float32 for euler) and
    ``scheduler.sigmas`` the ``num_steps + 1`` float32 noise levels ending at 0.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0 (the release uses {DEFAULT_SHIFT}), got {shift}")
    if name == "unipc":
        return _make_unipc(num_steps, shift)
    if name == "euler":
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=FLOW.num_train_timesteps, shift=shift)
        scheduler.set_timesteps(num_steps)
        return scheduler
    if name == "dpm++":
        return _make_dpm_pp(num_steps, shift)
    raise ValueError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}")


def _make_unipc(num_steps: int, shift: float) -> UniPCMultistepScheduler:
    from diffusers import UniPCMultistepScheduler

    if "sigmas" not in inspect.signature(UniPCMultistepScheduler.set_timesteps).parameters:
        raise RuntimeError(
            "this diffusers UniPCMultistepScheduler.set_timesteps() takes no `sigmas`, which the reference "
            "schedule needs; upgrade diffusers (tested with 0.42.1): pip install -U 'diffusers>=0.42'"
        )
    # solver_order 2, bh2, predict_x0, lower_order_final and final_sigmas_type "zero" are the reference's
    # values too; spelled out so a change of diffusers' defaults cannot silently change the solver.
    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=FLOW.num_train_timesteps,
        solver_order=2,
        prediction_type="flow_prediction",
        predict_x0=True,
        solver_type="bh2",
        lower_order_final=True,
        final_sigmas_type="zero",
        use_flow_sigmas=True,
        flow_shift=shift,
    )
    # The reference's un-shifted grid; diffusers applies flow_shift to it.
    unshifted = np.linspace(1 - 1 / FLOW.num_train_timesteps, 0, num_steps + 1)[:-1]
    scheduler.set_timesteps(sigmas=unshifted)
    return scheduler


def _make_dpm_pp(num_steps: int, shift: float) -> DPMSolverMultistepScheduler:
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=FLOW.num_train_timesteps,
        solver_order=2,
        prediction_type="flow_prediction",
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        lower_order_final=True,
        euler_at_final=False,
        final_sigmas_type="zero",
        use_flow_sigmas=True,
        flow_shift=shift,
    )
    # diffusers' DPM set_timesteps() takes no explicit sigmas and its flow grid starts at shift(1 - 1/T),
    # while the reference starts at sigma = 1. set_timesteps(N) resets the multistep state for N steps;
    # then the grid is replaced by the reference's (same length, so the solver's bookkeeping still holds).
    # At sigma = 1 the solver's log-SNR is -inf, which its update formulas handle (exp(-inf) = 0).
    scheduler.set_timesteps(num_steps)
    sigmas = FLOW.shift(np.linspace(1, 0, num_steps + 1)[:num_steps], shift)  # float64, [N]
    scheduler.sigmas = torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))
    scheduler.timesteps = torch.from_numpy(FLOW.timestep(sigmas)).to(torch.int64)  # truncates
    return scheduler


def guidance(pos: torch.Tensor, neg: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ``neg + scale * (pos - neg)``, in the predictions' dtype (bf16 in the release).

    The operation order is the reference's; reordering it (e.g. ``(1 - s) * neg + s * pos``) changes bf16
    rounding.
    """
    return neg + scale * (pos - neg)


class FlowSampler:
    """One modality's solver: the schedule plus the solver state, stepped once per timestep in order.

    Use ``sampler.timesteps[k]`` (or :meth:`model_timestep`) as the model's ``t`` at step ``k`` and
    ``sampler.step(pred, t, x)`` for the update. Create one per modality and per generation (or call
    :meth:`reset`): multistep solvers keep a history of past predictions.
    """

    def __init__(self, solver: str, num_steps: int, shift: float = DEFAULT_SHIFT) -> None:
        self.solver = solver
        self.num_steps = num_steps
        self.shift = shift
        self.reset()

    def reset(self) -> None:
        """Start a new trajectory: fresh solver state, same schedule."""
        self.scheduler = make_scheduler(self.solver, self.num_steps, self.shift)
        self._next_index = 0

    @property
    def timesteps(self) -> torch.Tensor:
        """``[N]`` timesteps as the model receives them: int64 for unipc / dpm++, float32 for euler."""
        return self.scheduler.timesteps

    @property
    def sigmas(self) -> torch.Tensor:
        """``[N + 1]`` float32 noise levels; ``sigmas[k]`` belongs to ``timesteps[k]``, the last is 0."""
        return self.scheduler.sigmas

    def model_timestep(
        self, index: int, batch_size: int = 1, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``[batch_size]`` tensor of ``timesteps[index]`` in the schedule's dtype, ready for the model."""
        value = self.timesteps[index].item()
        return torch.full((batch_size,), value, dtype=self.timesteps.dtype, device=device)

    def step(self, model_output: torch.Tensor, timestep: torch.Tensor | float, sample: torch.Tensor) -> torch.Tensor:
        """One solver update of ``sample`` (any shape) given the flow prediction at ``timestep``.

        Arithmetic runs in the sample's dtype as diffusers does it (unipc / euler: bf16 latents stay bf16,
        bitwise equal to the reference). Steps must follow ``timesteps`` in order.
        """
        k = self._next_index
        if k >= self.num_steps:
            raise RuntimeError(f"all {self.num_steps} steps of this {self.solver} sampler are done; call reset()")
        given = float(torch.as_tensor(timestep).reshape(-1)[0])
        expected = float(self.timesteps[k])
        if given != expected:
            raise ValueError(
                f"{self.solver} step {k} expects timestep {expected:g}, got {given:g}; step through "
                "sampler.timesteps in order, or call reset() to start a new trajectory"
            )
        self._next_index += 1
        return self.scheduler.step(model_output, self.timesteps[k], sample, return_dict=False)[0]

    def __len__(self) -> int:
        return self.num_steps

    def __repr__(self) -> str:
        return f"FlowSampler(solver={self.solver!r}, num_steps={self.num_steps}, shift={self.shift})"


def make_samplers(
    solver: str, num_steps: int, shift: float = DEFAULT_SHIFT
) -> tuple[FlowSampler, FlowSampler]:
    """``(video_sampler, audio_sampler)``: two independent solvers on the same schedule, as the release runs."""
    return FlowSampler(solver, num_steps, shift), FlowSampler(solver, num_steps, shift)
