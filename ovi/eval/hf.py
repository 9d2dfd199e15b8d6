"""The shared shell of the metrics that run a transformers dual encoder (CLAP, CLIP) from one local folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch


class DualEncoderMetric:
    """Model + processor loaded from a local folder (nothing downloads); subclasses name the two classes."""

    model_class: ClassVar[str]  # a transformers class name, e.g. "ClapModel"
    processor_class: ClassVar[str]  # e.g. "ClapProcessor"

    def __init__(self, model: Any, processor: Any, device: str = "cpu") -> None:
        self.model, self.processor, self.device = model.to(device).eval(), processor, device

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> DualEncoderMetric:
        import transformers

        model = getattr(transformers, cls.model_class).from_pretrained(folder)
        return cls(model, getattr(transformers, cls.processor_class).from_pretrained(folder), device)

    @staticmethod
    def _vector(out: Any) -> torch.Tensor:  # transformers 5 returns an output object, 4.x a tensor
        return out if isinstance(out, torch.Tensor) else out.pooler_output
