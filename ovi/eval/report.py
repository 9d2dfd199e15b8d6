"""An evaluation's result: per-clip rows + aggregate figures, written as JSON, a markdown table and PNG plots."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ovi.fileio import atomic_write_text

SKIP_PLOT = ("toy_kind", "transcript", "face_tracks")


@dataclass
class Report:
    rows: list[dict]  # per clip: {"id", "prompt", <metric fields>}
    aggregate: dict[str, float]
    errors: dict[str, str] = field(default_factory=dict)  # metric -> why it did not run

    def as_dict(self) -> dict:
        return {"aggregate": self.aggregate, "errors": self.errors, "clips": self.rows}


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def markdown(report: Report) -> str:
    lines = ["| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in report.aggregate.items()]
    lines += [f"| {k} | not run: {e} |" for k, e in report.errors.items()]
    keys = [k for k in dict.fromkeys(k for r in report.rows for k in r) if k not in ("id", "prompt", "transcript")]
    if keys:
        lines += ["", "| clip | " + " | ".join(keys) + " |", "|" + " --- |" * (len(keys) + 1)]
        lines += ["| " + " | ".join([r["id"]] + [_fmt(r.get(k, "")) for k in keys]) + " |" for r in report.rows]
    return "\n".join(lines) + "\n"


def numeric_columns(rows: list[dict]) -> dict[str, np.ndarray]:
    cols: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r.items():
            if k not in SKIP_PLOT and isinstance(v, (int, float)) and not isinstance(v, bool):
                cols.setdefault(k, []).append(float(v))
    return {k: np.asarray([x for x in v if not math.isnan(x)]) for k, v in cols.items()}


def plots(report: Report, out: Path) -> list[Path]:
    """A histogram per numeric per-clip metric; offsets (``*offset*``) get their own distribution plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, values in numeric_columns(report.rows).items():
        if values.size == 0:
            continue
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.hist(values, bins=min(20, max(5, values.size)))
        ax.set_title(("sync offset distribution: " if "offset" in name else "") + name)
        ax.set_xlabel(name)
        ax.set_ylabel("clips")
        fig.tight_layout()
        path = out / f"hist_{name}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def write(report: Report, out: str | Path) -> dict[str, Path]:
    """``out/metrics.json``, ``out/metrics.md`` and ``out/plots/*.png``."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(report.as_dict(), indent=1, default=float) + "\n")
    atomic_write_text(out / "metrics.md", markdown(report))
    plots(report, out / "plots")
    return {"json": out / "metrics.json", "markdown": out / "metrics.md", "plots": out / "plots"}
