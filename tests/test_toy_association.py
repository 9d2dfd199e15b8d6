"""Held-out colours (the toy LoRA's target, issue 11) and the association measure that scores them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ovi.toy import association, cli
from ovi.toy.draw import HELD_OUT, PALETTE
from ovi.toy.scenes.bounce import pitch_range
from ovi.toy.world import make_clip


def test_held_out_colour_is_drawn_and_heard_only_when_asked():
    clip = make_clip("bounce", [4, 0], palette=["cyan"])
    lo, hi = pitch_range("cyan")
    assert {o["colour"] for o in clip.truth["objects"]} == {"cyan"} and "cyan" in clip.truth["caption"]
    assert all(lo - 0.1 <= o["pitch_hz"] <= hi + 0.1 for o in clip.truth["objects"])
    assert hi < 1.3 * lo and lo > max(pitch_range(c)[1] for c in PALETTE)  # a band of its own
    assert association.colour_share(clip.frames, "cyan") > 0.95
    assert association.pitch_share(clip.audio, "cyan") > 0.9
    for i in range(4):
        default = make_clip("bounce", [4, i])
        assert not {o["colour"] for o in default.truth["objects"]} & set(HELD_OUT)
        assert association.colour_share(default.frames, "cyan") < 0.05
        assert association.pitch_share(default.audio, "cyan") < 0.1
        own = {o["colour"] for o in default.truth["objects"]}
        assert sum(association.colour_share(default.frames, c) for c in own) > 0.9  # its own colours do score


@pytest.mark.parametrize("kind", ["bounce", "flash"])
def test_default_palette_leaves_the_world_as_it_was(kind):
    plain, named = make_clip(kind, [5, 1]), make_clip(kind, [5, 1], palette=list(PALETTE))
    assert np.array_equal(plain.frames, named.frames) and np.array_equal(plain.audio, named.audio)
    assert plain.truth == named.truth


def test_one_colour_for_several_lamps_gives_one_lamp():
    for i in range(4):
        truth = make_clip("flash", [6, i], palette=["cyan"]).truth
        assert [o["colour"] for o in truth["objects"]] == ["cyan"] and truth["count"] == 1


def test_palette_is_refused_where_it_means_nothing(tmp_path, capsys):
    with pytest.raises(ValueError, match="only applies to bounce and flash"):
        make_clip("face", 0, palette=["cyan"])
    with pytest.raises(SystemExit):
        cli.main(["make", "--out", str(tmp_path), "--num", "1", "--colours", "cyan"])  # all kinds: face too
    assert "--kinds bounce" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["make", "--out", str(tmp_path), "--num", "1", "--kinds", "bounce", "--colours", "magenta"])
    assert not list(tmp_path.iterdir())


def test_association_cli_scores_written_clips(tmp_path):
    world = tmp_path / "cyan"
    assert cli.main(["make", "--out", str(world), "--num", "2", "--seed", "3", "--kinds", "bounce",
                     "--colours", "cyan"]) == 0
    for colour, low, high in (("cyan", 0.9, 1.0), ("red", 0.0, 0.05)):
        out = tmp_path / f"{colour}.json"
        assert association.main([str(world), "--colour", colour, "--json", str(out)]) == 0
        summary = json.loads(out.read_text())["summary"]
        assert summary["clips"] == 2
        assert low <= summary["colour_share"] <= high and low <= summary["pitch_share"] <= high
