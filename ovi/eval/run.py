"""``evaluate``: clips + metric names + weight paths -> Report. A metric that cannot run (missing weights,
missing references) is reported with its one-line reason; the others still run."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from ovi.eval.clips import EvalClip, discover
from ovi.eval.registry import DEFAULT_METRICS, Metric, build_metric
from ovi.eval.report import Report
from ovi.eval.weights import MissingWeights

log = logging.getLogger(__name__)


def score_clips(clips: list[EvalClip], metrics: Sequence[Metric], errors: dict[str, str] | None = None) -> Report:
    rows = [{"id": c.id, "prompt": c.prompt} for c in clips]
    aggregate = {"clips": len(clips)}
    errors = dict(errors or {})
    for metric in metrics:
        try:
            per_clip, agg = metric.score(clips)
        except (MissingWeights, ValueError) as e:
            errors[metric.name] = str(e)
            continue
        for row, extra in zip(rows, per_clip, strict=True):
            row.update(extra)
        aggregate.update(agg)
    return Report(rows, aggregate, errors)


def evaluate(folder: str | Path, metrics: Sequence[str] = DEFAULT_METRICS, weights: dict | None = None,
             prompts_file: str | Path | None = None, references: str | Path | None = None,
             device: str = "cpu") -> Report:
    clips = discover(folder, prompts_file, references)
    built, errors = [], {}
    for name in metrics:
        try:
            built.append(build_metric(name, weights or {}, device))
        except (MissingWeights, ImportError) as e:
            errors[name] = str(e)
            log.warning("%s", e)
    return score_clips(clips, built, errors)
