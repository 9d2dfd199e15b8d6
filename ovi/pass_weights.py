"""Weights swapped into the fusion model for one pass: ``checkpoints.v2a``, used whenever sound is made from a
clean video (the second pass of ``audio_from_video``, and V2A with ``conditioning=clean``).

    fusion file --joint pass--> video latent (and a first sound)
    V2A weights (some of the model's tensors, e.g. a V2A-tuned audio tower:
    ``python -m train.export ... --only 'audio_model.*'``) --swapped in--> the sound made again from the
    finished (or given) video --swapped back--> the model as loaded

A swap of parameter storage, not a second model: the tensors the file does not hold (here the whole video tower,
which only reads the clean video in that pass) stay shared, so the extra memory is the file's tensors alone. The
joint pass keeps the fusion file's prompt adherence; V2A tuning the audio tower inside the fusion file instead
would change what the video tower reads from the audio in the joint pass.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open

from ovi.lora import base_name
from ovi.release import V2A_WEIGHTS_HINT
from ovi.state_dict_utils import mismatch_report


class PassWeights:
    """``tensors`` [name -> tensor] that replace the model's parameters of the same names inside :meth:`applied`."""

    def __init__(self, model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str = "pass weights"):
        # Names as the base model spells them, so a LoRA-wrapped layer (peft's '.base_layer.') is still found.
        self._params = {base_name(n): p for n, p in model.named_parameters()}
        if not tensors:
            raise ValueError(f"{source} holds no tensors; export some with python -m train.export --only 'audio_model.*'")
        # A subset of the model: only the names it holds are expected, so a name the model lacks is "unexpected".
        expected = {n: self._params[n].shape for n in tensors if n in self._params}
        report = mismatch_report(expected, {n: t.shape for n, t in tensors.items()})
        if report:
            raise ValueError(f"{source} does not fit the fusion model: {report}. It must hold tensors of a model of "
                             "the same config (python -m train.export --only 'audio_model.*' on its run)")
        self.tensors = {n: t.to(self._params[n].dtype) for n, t in tensors.items()}
        self.source = source

    @classmethod
    def from_file(cls, model: torch.nn.Module, path: str | Path) -> PassWeights:
        if not Path(path).is_file():
            raise FileNotFoundError(f"V2A weights {path} not found: {V2A_WEIGHTS_HINT}")
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return cls(model, tensors, source=str(path))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model with these tensors in place of its own; its own are back on exit (also on an error)."""
        own: dict[str, torch.Tensor] = {}
        try:
            for name, t in self.tensors.items():
                p = self._params[name]
                if t.device != p.device:  # follows the model to its device once (the pipeline places it later)
                    t = self.tensors[name] = t.to(p.device)
                own[name] = p.data
                p.data = t
            yield
        finally:
            for name, t in own.items():
                self._params[name].data = t
