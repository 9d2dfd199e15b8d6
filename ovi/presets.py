"""Inference presets and config files, found from any working directory.

``configs/`` ships beside the ``ovi`` package (the checkout, or an editable install of it). A config is
looked up as given (relative to the working directory), then as a preset name (``tiny_cpu`` ->
``configs/inference/tiny_cpu.yaml``), then relative to the repository (``configs/model/tiny.yaml``). The
``model:`` path inside a preset goes through the same lookup, so ``ovi-generate --config tiny_cpu`` works
from any folder.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ovi.config import InferenceConfig, load_config
from ovi.release import REPO_ROOT

CONFIG_ROOT = REPO_ROOT / "configs"
PRESET_DIR = CONFIG_ROOT / "inference"
DEFAULT_PRESET = "toy"  # the shipped toy model (checkpoints/toy): runs on any CPU; the release default is 960x960_10s


def list_presets() -> list[str]:
    """Names of the packaged inference presets (``configs/inference/*.yaml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_file(name_or_path: str | Path) -> Path:
    """A config path: as given, else a preset name, else relative to the repository; raises naming the fix."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    candidates = [REPO_ROOT / path]
    if path.suffix == "" and len(path.parts) == 1:
        candidates.insert(0, PRESET_DIR / f"{path}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"config {name_or_path} not found (looked in the working directory, {PRESET_DIR} and {REPO_ROOT}); "
        f"give a YAML path or a preset name: {', '.join(list_presets())}"
    )


def load_inference_config(name_or_path: str | Path = DEFAULT_PRESET, overrides: Sequence[str] = ()) -> InferenceConfig:
    """An InferenceConfig from a preset name or YAML path plus ``key=value`` overrides, ``model`` resolved."""
    cfg = load_config(InferenceConfig, resolve_config_file(name_or_path), overrides)
    return replace(cfg, model=str(resolve_config_file(cfg.model)))
