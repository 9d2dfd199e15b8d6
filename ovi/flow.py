"""Rectified-flow conventions shared by training (``train/objective.py``) and sampling (``ovi/sampling.py``).

For data ``x`` and noise ``eps`` at noise level ``sigma`` in [0, 1]:

    x_sigma = (1 - sigma) * x + sigma * eps       (noise)
    v       = eps - x                             (velocity: the model's target, d x_sigma / d sigma)
    x       = x_sigma - sigma * v                 (to_data: what the solvers' x0 prediction computes)
    t       = 1000 * sigma                        (timestep: what the model is conditioned on)

and the time shift ``s' = shift * s / (1 + (shift - 1) * s)`` that moves steps (or training samples)
towards high noise. Every method works on Python floats, numpy arrays and torch tensors alike, with the
operation order fixed: the sampler's float64 grids and the reference schedules depend on it bitwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

# Anything the formulas accept: float, numpy array or torch tensor (the result has the input's type).
Array = TypeVar("Array", float, np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class FlowMatching:
    """The flow the released models were trained with: t = ``num_train_timesteps`` * sigma."""

    num_train_timesteps: int = 1000  # Wan / Ovi schedulers

    @staticmethod
    def shift(sigma: Array, shift: float) -> Array:
        """The time shift ``shift * s / (1 + (shift - 1) * s)``; shift 1 is the identity, > 1 favours noise."""
        return shift * sigma / (1 + (shift - 1) * sigma)

    def timestep(self, sigma: Array) -> Array:
        """Model timestep for ``sigma`` (not truncated; the int64 solvers truncate it themselves)."""
        return sigma * self.num_train_timesteps

    @staticmethod
    def noise(x: torch.Tensor, eps: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """``x_sigma = (1 - sigma) * x + sigma * eps`` (a tensor ``sigma`` must broadcast against ``x``)."""
        return (1.0 - sigma) * x + sigma * eps

    @staticmethod
    def velocity(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The regression target ``eps - x``: constant along the straight path from ``x`` to ``eps``."""
        return eps - x

    @staticmethod
    def to_data(x_sigma: torch.Tensor, v: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Clean data implied by a velocity prediction: ``x_sigma - sigma * v``."""
        return x_sigma - sigma * v


FLOW = FlowMatching()
