"""Benchmark prompt sets from a local copy: Verse-Bench (sets 1-3), JavisBench(-mini), UniHAGen-Bench.

Nothing is downloaded; point ``root`` at the benchmark's folder. The layouts read (the synthetic stand-in
under ``tests/data/benchmarks`` has each):

- ``verse``: ``set1/ set2/ set3/``, each with a manifest (``*.jsonl``, ``*.json`` list, or ``*.csv``) whose rows
  name a prompt (``prompt``/``text``/``caption``), an image (``image``/``image_path``) and, when published,
  reference media (``video``/``audio``), paths relative to the set folder. Set 1 is the paper's 205
  image-text pairs.
- ``javis``: a ``*.csv`` (or jsonl) at the root with a ``text`` column and, when given, the reference ``path``.
- ``unihagen``: ``on_screen/ off_screen/ speech/`` scenario folders, each with a manifest as above.

``prompt_pairs`` turns any of them into the (prompt, image) list ``ovi-generate --prompts-file`` takes.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

PROMPT_KEYS = ("prompt", "text", "caption")
IMAGE_KEYS = ("image", "image_path", "first_frame")
VIDEO_KEYS = ("video", "video_path", "path")
AUDIO_KEYS = ("audio", "audio_path")
VERSE_SETS = ("set1", "set2", "set3")
UNIHAGEN_SCENARIOS = ("on_screen", "off_screen", "speech")
MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv")


@dataclass
class BenchmarkItem:
    id: str
    prompt: str
    image: Path | None = None
    reference_video: Path | None = None
    reference_audio: Path | None = None
    subset: str = ""  # Verse-Bench set or UniHAGen scenario


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return data if isinstance(data, list) else list(data.values())
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _first(row: dict, keys: tuple[str, ...]) -> str | None:
    return next((str(row[k]) for k in keys if row.get(k)), None)


def _manifest(folder: Path) -> Path:
    found = sorted(p for p in folder.iterdir() if p.suffix in MANIFEST_SUFFIXES)
    if not found:
        raise FileNotFoundError(f"no manifest ({', '.join(MANIFEST_SUFFIXES)}) in {folder}; see ovi/eval/benchmarks.py "
                                "for the layout read")
    return found[0]


def read_manifest(folder: Path, subset: str = "") -> list[BenchmarkItem]:
    items = []
    for i, row in enumerate(_rows(_manifest(folder))):
        prompt = _first(row, PROMPT_KEYS)
        if prompt is None:
            raise ValueError(f"{folder}: row {i} has none of {PROMPT_KEYS}")

        def path(keys: tuple[str, ...]) -> Path | None:
            v = _first(row, keys)
            return None if v is None else (Path(v) if Path(v).is_absolute() else folder / v)

        items.append(BenchmarkItem(id=str(row.get("id") or f"{subset or folder.name}_{i:04d}"), prompt=prompt,
                                   image=path(IMAGE_KEYS), reference_video=path(VIDEO_KEYS),
                                   reference_audio=path(AUDIO_KEYS), subset=subset))
    return items


def _subsets(root: Path, names: tuple[str, ...], chosen: list[str] | None) -> list[BenchmarkItem]:
    wanted = tuple(chosen) if chosen else tuple(n for n in names if (root / n).is_dir())
    missing = [n for n in wanted if not (root / n).is_dir()]
    if missing or not wanted:
        raise FileNotFoundError(f"{root} lacks {missing or 'every subset'}; expected folders {', '.join(names)}")
    return [item for n in wanted for item in read_manifest(root / n, n)]


def load_verse_bench(root: str | Path, sets: list[str] | None = None) -> list[BenchmarkItem]:
    return _subsets(Path(root), VERSE_SETS, sets)


def load_javis_bench(root: str | Path) -> list[BenchmarkItem]:
    return read_manifest(Path(root), "javis")


def load_unihagen_bench(root: str | Path, scenarios: list[str] | None = None) -> list[BenchmarkItem]:
    return _subsets(Path(root), UNIHAGEN_SCENARIOS, scenarios)


LOADERS = {"verse": load_verse_bench, "javis": load_javis_bench, "unihagen": load_unihagen_bench}


def load_benchmark(name: str, root: str | Path) -> list[BenchmarkItem]:
    if name not in LOADERS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(LOADERS)}")
    return LOADERS[name](root)


def prompt_pairs(source: str | Path) -> list[tuple[str, str | None]]:
    """(prompt, image or None) for ``ovi-generate --prompts-file``: ``source`` is ``NAME:ROOT`` (a benchmark
    folder, e.g. ``verse:/data/Verse-Bench``) or a prompts file (``prompt`` or ``prompt<TAB>image`` lines)."""
    name, sep, root = str(source).partition(":")
    if sep and name in LOADERS:
        return [(it.prompt, str(it.image) if it.image else None) for it in load_benchmark(name, root)]
    from ovi.eval.clips import read_prompts_file

    return read_prompts_file(source)
