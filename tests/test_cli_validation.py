"""Every bad input is refused before any model loads: exit code 2, one line naming the fix, nothing written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import forbid_model_loading
from ovi.cli.generate import main
from ovi.prompt_files import read_prompts_file

REPO = Path(__file__).resolve().parents[1]
FAST = ["num_frames=25", "num_steps=2"]
PROMPT = "A dog barks. Audio: barking"  # short: within the tiny model's 32 text tokens
LONG = "A dog barks at the moon all night long. Audio: barking"


def _files(tmp: Path) -> dict[str, str]:
    """The bad files the cases refer to."""
    (tmp / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 8)
    (tmp / "a_file").write_text("x")
    (tmp / "comma.csv").write_text("text_prompt\nA dog, a cat. Audio: barking\n")
    (tmp / "latin1.csv").write_bytes("prompt\nCafé scene. Audio: chatter\n".encode("latin-1"))
    (tmp / "quote.csv").write_text('prompt\n"A dog" barks. Audio: bark\n')
    return {Path(k).stem: str(tmp / k) for k in ("corrupt.png", "a_file", "comma.csv", "latin1.csv", "quote.csv")}


# (case id, argv after the preset, text the one line must contain)
CASES = [
    ("steps0", ["num_steps=0"], "num_steps=0 must be >= 1"),
    ("steps-3", ["num_steps=-3"], "num_steps=-3"),
    ("solver", ["solver=foo"], "solver='foo' is unknown"),
    ("backend", ["attention_backend=bogus"], "attention_backend='bogus'"),
    ("variant", ["variant=foo"], "variant='foo' is unknown"),
    ("quantize", ["quantize=int9"], "quantize='int9' is unknown"),
    ("offload", ["offload_blocks=-1"], "offload_blocks=-1 must be >= 0"),
    ("step_cache", ["step_cache=-0.5"], "step_cache=-0.5 must be >= 0"),
    ("aspect", ["aspect_ratio=[0,9]"], "aspect_ratio=[0, 9]"),
    ("area0", ["area=0"], "area=0 must be > 0"),
    ("samples0", ["num_samples=0"], "num_samples=0"),
    ("frames", ["num_frames=24"], "num_frames=24 must be 4k+1"),
    ("height_only", ["height=512"], "give both"),
    ("slg", ["slg_layer=7"], "slg_layer=7 out of range"),
    ("seed_text", ["seed=abc"], "seed"),
    ("seed_huge", [f"seed={2**63}"], "out of range"),
    ("unknown_key", ["num_stpes=3"], "num_stpes"),
    ("resume_random", ["seed=-1", "--skip-existing"], "needs a fixed seed"),
    ("corrupt_image", ["--image", "{corrupt}"], "cannot be decoded"),
    ("missing_image", ["--image", "{a_file}.png"], "image not found"),
    ("out_is_file", ["output_dir={a_file}"], "is a file"),
    ("out_readonly", ["output_dir=/proc/ovi-out"], "not writable"),
    ("long_prompt", ["long_prompts=error", "--prompt", LONG], "tokens, over the model's 32"),
    ("bad_prompt", ["--prompt", "He says <S>hi. Audio: x"], "<S>"),
    ("csv_comma", ["--prompts-file", "{comma}"], "comma.csv line 2: 2 fields but the header has 1"),
    ("csv_encoding", ["--prompts-file", "{latin1}"], "latin1.csv line 2: not UTF-8"),
    ("csv_quote", ["--prompts-file", "{quote}"], "quote.csv line 2"),
    ("no_preset", ["--config", "no_such_preset"], "tiny_cpu"),
]


@pytest.mark.parametrize("case, extra, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(case: str, extra: list[str], expected: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    forbid_model_loading(monkeypatch)
    files = _files(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    out = tmp_path / "out"
    extra = [arg.format(**files) if "{" in arg else arg for arg in extra]
    argv = ["--config", "tiny_cpu", "--prompt", PROMPT, *FAST, f"output_dir={out}", *extra]
    if "--config" in extra:
        argv = argv[2:]
    if "--prompts-file" in extra:
        argv = [a for a in argv if a not in ("--prompt", PROMPT)]
    code = main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("ovi-generate: ") and expected in lines[0], lines[0]
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even the output folder


def test_check_validates_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    forbid_model_loading(monkeypatch)
    out = tmp_path / "out"
    assert main(["--config", "tiny_cpu", "--prompt", PROMPT, *FAST, f"output_dir={out}", "--check"]) == 0
    assert "ok: 1 prompt(s)" in capsys.readouterr().out and not out.exists()


def test_reference_csv_with_bom_and_reference_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference's example files: `text_prompt`, `image_path` relative to the working directory, a BOM."""
    img = tmp_path / "pngs" / "0.png"
    img.parent.mkdir()
    Image.fromarray(np.zeros((48, 80, 3), np.uint8)).save(img)
    csv = tmp_path / "examples.csv"
    csv.write_text('\ufefftext_prompt,image_path\n"A dog, barking. <AUDCAP>barks<ENDAUDCAP>",pngs/0.png\n'
                   'A cat. Audio: purr,\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    jobs = read_prompts_file(csv)
    assert [(j.prompt, j.image) for j in jobs] == [("A dog, barking. <AUDCAP>barks<ENDAUDCAP>", "pngs/0.png"),
                                                   ("A cat. Audio: purr", None)]
    assert jobs[0].where == "examples.csv line 2"
    forbid_model_loading(monkeypatch)
    assert main(["--config", "tiny_cpu", "--prompts-file", str(csv), *FAST, "--check",
                 f"output_dir={tmp_path / 'o'}"]) == 0


def test_presets_are_found_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--list-presets"]) == 0
    assert {"tiny_cpu", "960x960_10s", "720x720_5s"} <= set(capsys.readouterr().out.split())
    assert main(["--config", "tiny_cpu", "--print-config", "num_steps=3"]) == 0
    printed = capsys.readouterr().out
    assert "num_steps: 3" in printed and str(REPO / "configs/model/tiny.yaml") in printed


def test_released_presets_agree_with_the_release_table() -> None:
    from ovi.presets import load_inference_config
    from ovi.validation import RELEASED_AREA, RELEASED_NUM_FRAMES

    for variant in RELEASED_NUM_FRAMES:
        cfg = load_inference_config(variant)
        assert (cfg.variant, cfg.num_frames, cfg.area) == (variant, RELEASED_NUM_FRAMES[variant], RELEASED_AREA[variant])


def test_validation_knows_the_pipelines_dtypes() -> None:
    from ovi.pipeline import DTYPES
    from ovi.validation import DTYPE_NAMES

    assert set(DTYPE_NAMES) == set(DTYPES)
