"""Metric names -> metrics built from local weight paths (``--metrics`` / ``--weights`` of ``ovi-eval``)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import torch

from ovi.eval.clips import EvalClip
from ovi.eval.weights import weight_path


class Metric(Protocol):
    name: str

    def score(self, clips: list[EvalClip]) -> tuple[list[dict], dict]: ...


def _panns(w: dict, device: str) -> Metric:
    from ovi.eval.audio_metrics import PannsMetric, load_cnn14

    return PannsMetric(load_cnn14(weight_path(w, "panns")), device)


def _clap(w: dict, device: str) -> Metric:
    from ovi.eval.audio_metrics import ClapMetric

    return ClapMetric.load(weight_path(w, "clap"), device)


def _audiobox(w: dict, device: str) -> Metric:
    from ovi.eval.audio_metrics import AudioboxMetric

    return AudioboxMetric.load(weight_path(w, "audiobox"), device)


def _wer(w: dict, device: str) -> Metric:
    from ovi.eval.audio_metrics import WerMetric, WhisperTranscriber

    return WerMetric(WhisperTranscriber.load(weight_path(w, "whisper"), device))


def _clip(w: dict, device: str) -> Metric:
    from ovi.eval.video_metrics import ClipMetrics

    return ClipMetrics.load(weight_path(w, "clip"), device)


def _fvd(w: dict, device: str) -> Metric:
    from ovi.eval.video_metrics import FvdMetric, i3d

    return FvdMetric(i3d(torch.load(weight_path(w, "i3d"), map_location="cpu")), device)


def _syncnet(w: dict, device: str) -> Metric:
    from ovi.eval.sync_metrics import SyncNetMetric

    return SyncNetMetric.load(weight_path(w, "s3fd"), weight_path(w, "syncnet"), device)


def _desync(w: dict, device: str) -> Metric:
    from ovi.eval.synchformer import DesyncMetric

    return DesyncMetric.load(weight_path(w, "desync"), device)


def _toy(w: dict, device: str) -> Metric:
    from ovi.eval.sync_metrics import ToyMetric

    return ToyMetric()


BUILDERS: dict[str, Callable[[dict, str], Metric]] = {
    "toy": _toy, "syncnet": _syncnet, "desync": _desync, "panns": _panns, "clap": _clap,
    "audiobox": _audiobox, "wer": _wer, "clip": _clip, "fvd": _fvd,
}
DEFAULT_METRICS = ("toy",)  # needs no weights


def build_metric(name: str, weights: dict[str, str | Path], device: str = "cpu") -> Metric:
    if name not in BUILDERS:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(BUILDERS)}")
    return BUILDERS[name](weights, device)
