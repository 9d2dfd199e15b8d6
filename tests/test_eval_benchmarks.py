"""Benchmark prompt-set loaders on the synthetic stand-ins in tests/data/benchmarks, and the ovi-eval CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ovi.eval.benchmarks import load_benchmark, load_unihagen_bench, load_verse_bench, prompt_pairs
from ovi.eval.cli import main
from ovi.toy.world import make_clip, write_clip

DATA = Path(__file__).resolve().parent / "data" / "benchmarks"


def test_verse_bench_sets_and_fields():
    items = load_verse_bench(DATA / "verse")
    assert [i.subset for i in items] == ["set1", "set1", "set2", "set3"]
    first = items[0]
    assert first.id == "v1_0001" and first.image == DATA / "verse/set1/0001.png" and first.image.exists()
    assert first.reference_video == DATA / "verse/set1/0001.mp4"
    assert items[2].prompt.startswith("Waves") and items[3].reference_audio.name == "drum.wav"
    assert [i.subset for i in load_verse_bench(DATA / "verse", ["set2"])] == ["set2"]


def test_javis_and_unihagen():
    javis = load_benchmark("javis", DATA / "javis")
    assert [i.prompt for i in javis] == ["A dog barks at a passing car.", "Rain taps on a tin roof."]
    assert javis[0].reference_video == DATA / "javis/videos/a.mp4"
    uni = load_unihagen_bench(DATA / "unihagen")
    assert [i.subset for i in uni] == ["on_screen", "off_screen", "speech"] and "<S>" in uni[2].prompt


def test_prompt_pairs_for_ovi_generate(tmp_path):
    pairs = prompt_pairs(f"verse:{DATA / 'verse'}")
    assert pairs[0] == ("A red square hums. <S>Hello there.<E>", str(DATA / "verse/set1/0001.png"))
    assert pairs[2][1] is None
    f = tmp_path / "prompts.txt"
    f.write_text("a cat meows\n\nrain on a roof\t/img.png\n")
    assert prompt_pairs(f) == [("a cat meows", None), ("rain on a roof", "/img.png")]


def test_missing_layout_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="set1"):
        load_verse_bench(tmp_path)


def test_ovi_eval_cli_prints_the_table_and_writes_plots(tmp_path, capsys):
    for i, kind in enumerate(("bounce", "flash")):
        write_clip(tmp_path / "gen", f"{i:03d}_{kind}_seed0", make_clip(kind, [3, i], 64))
    assert main([str(tmp_path / "gen"), "--metrics", "toy,clap"]) == 0
    out = capsys.readouterr().out
    assert "| toy_share_matched | 1 |" in out and "clap: needs" in out
    report = json.loads((tmp_path / "gen/eval/metrics.json").read_text())
    assert len(report["clips"]) == 2 and "clap" in report["errors"]
    assert (tmp_path / "gen/eval/plots/hist_toy_median_offset_ms.png").exists()
