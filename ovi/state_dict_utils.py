"""Reading released ``.pth`` state dicts and checking them against a model, with errors that say what to fix.

Shared by the codec loaders (video VAE, text encoder). Every release file Ovi uses is a plain
``torch.save(state_dict)``; loads are strict, so a mismatch must name the offending keys.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

# How many offending keys an error message lists per category before summarising with a count.
_KEYS_SHOWN = 5


class StateDictMismatchError(ValueError):
    """A weight file's keys or shapes differ from what the model expects."""


def load_release_state_dict(
    path: str | Path, *, what: str, expected_file: str, download_hint: str
) -> dict[str, torch.Tensor]:
    """``torch.load`` a plain state_dict file on CPU (memory-mapped, tensors only).

    ``what`` names the model, ``expected_file`` the released file name and ``download_hint`` where
    the user gets it; all three appear in the error when the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} weights not found at {path}: expected the released file `{expected_file}`. {download_hint}"
        )
    # mmap keeps a multi-GB file out of RAM until each tensor is assigned; weights_only refuses pickled code.
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StateDictMismatchError(
            f"{path} is not a plain state_dict (a mapping of names to tensors), as the released `{expected_file}` is; "
            f"got {type(state).__name__}. Pass the original file, not a training checkpoint or a converted copy."
        )
    return dict(state)


def rename_keys(state: Mapping[str, torch.Tensor], rules: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Apply ``(regex, replacement)`` rules in order to every key; the tensors are not copied."""
    compiled = [(re.compile(pattern), repl) for pattern, repl in rules]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        for pattern, repl in compiled:
            new = pattern.sub(repl, new)
        out[new] = value
    return out


def _listing(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_KEYS_SHOWN])
    more = f", ... ({len(items) - _KEYS_SHOWN} more)" if len(items) > _KEYS_SHOWN else ""
    return f"{len(items)} {label}: {shown}{more}"


def mismatch_report(
    expected: Mapping[str, torch.Size | Sequence[int]], found: Mapping[str, torch.Size | Sequence[int]]
) -> str | None:
    """The first few missing, unexpected and mis-shaped keys with their counts, or None when they agree.

    Works on shapes alone, so callers can check a file from its header before reading any tensor.
    """
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [
        f"{k} {tuple(found[k])} (expected {tuple(expected[k])})"
        for k in expected
        if k in found and tuple(found[k]) != tuple(expected[k])
    ]
    parts = [
        _listing(label, items)
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", misshaped))
        if items
    ]
    return "; ".join(parts) or None


def check_state_dict(
    expected: Mapping[str, torch.Size | Sequence[int]],
    got: Mapping[str, torch.Tensor],
    *,
    source: str,
    hint: str = "",
) -> None:
    """Raise :class:`StateDictMismatchError` unless ``got`` has exactly the ``expected`` keys and shapes."""
    report = mismatch_report(expected, {k: v.shape for k, v in got.items()})
    if report:
        raise StateDictMismatchError(f"{source} does not match the model: {report}" + (f". {hint}" if hint else ""))
