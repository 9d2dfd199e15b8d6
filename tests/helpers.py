"""Helpers shared by the tests: numerical comparison, and a guard that no model gets built."""
from __future__ import annotations

import torch

# At import (test collection), not inside a test: their first import brings in diffusers, whose torchao check logs
# a warning once per process; inside a test it lands in the captured stderr of the one-line-error checks.
import ovi.components
import ovi.pipeline


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def max_abs(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).abs().max())


def assert_close(
    out: torch.Tensor,
    ref: torch.Tensor,
    *,
    rel: float,
    abs_: float | None = None,
    abs_frac_of_max: float | None = None,
    name: str = "",
) -> None:
    """Assert ``rel_l2 <= rel`` and ``max_abs <= abs_`` (or ``abs_frac_of_max * max|ref|``)."""
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    r, m = rel_l2(out, ref), max_abs(out, ref)
    bound = abs_ if abs_ is not None else abs_frac_of_max * float(ref.double().abs().max())
    assert r <= rel and m <= bound, f"{name}: rel_l2 {r:.3g} (<= {rel:g}) max_abs {m:.3g} (<= {bound:.3g})"


def run_stages(cfg, names: list[str], record: dict) -> list[dict]:
    """Run data-pipeline stages ``names`` in order on one record, in this process; rejections pass along."""
    from data_pipeline.stages import build_stage

    records = [record]
    for name in names:
        stage = build_stage(name, cfg)
        stage.setup()
        records = [out for r in records for out in (stage.run(r) if r.get("status", "ok") == "ok" else [r])]
    return records


def forbid_model_loading(monkeypatch) -> None:  # noqa: ANN001 - pytest's MonkeyPatch
    """Make any pipeline or component construction fail the test: invalid requests must stop before a model."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was built for an invalid request")

    monkeypatch.setattr(ovi.pipeline.OviPipeline, "from_config", classmethod(refuse))
    monkeypatch.setattr(ovi.components, "random_components", refuse)
    monkeypatch.setattr(ovi.components, "load_components", refuse)
