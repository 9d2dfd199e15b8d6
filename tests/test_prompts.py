"""Prompt parsing, validation and the per-checkpoint formatters (checked against the reference's output)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ovi.prompts import (
    CHECKPOINT_PROMPT_STYLE,
    Prompt,
    PromptError,
    format_for_checkpoint,
    format_prompt,
    parse_prompt,
    validate_prompt,
)

TEXT_CLEANING = Path("text_encoder_a") / "text_cleaning.json"


def _records(reference_dir: Path) -> list[dict]:
    return json.loads((reference_dir / TEXT_CLEANING).read_text())["records"]


def test_reference_formatters_are_reproduced_for_every_example(reference_dir: Path) -> None:
    records = _records(reference_dir)
    checked = 0
    for rec in records:
        for checkpoint in CHECKPOINT_PROMPT_STYLE:
            expected = rec[f"engine_formatter.{checkpoint}"]
            got = format_for_checkpoint(rec["input"], checkpoint)
            assert got == expected, f"{checkpoint} on {rec['input']!r}: {got!r} != {expected!r}"
            checked += 1
    assert checked == 3 * len(records) >= 36


def test_video_text_matches_the_reference_tag_stripper(reference_dir: Path) -> None:
    # processing_utils.clean_text strips <S>..<E> and the audio description (used for the t2i prompt)
    for rec in _records(reference_dir):
        if not rec["input"].strip():
            with pytest.raises(PromptError, match="empty"):
                parse_prompt(rec["input"])
            continue
        assert parse_prompt(rec["input"]).video_text == rec["processing_utils.clean_text"], rec["input"]


def test_parse_audio_colon_with_several_speeches() -> None:
    p = parse_prompt("A man says <S>Hello there.<E> and later <S> Bye! <E> Audio: street noise,\n distant traffic ")
    assert p.video_text == "A man says and later"
    assert p.speech == ["Hello there.", "Bye!"]
    assert p.audio_description == "street noise,\n distant traffic"
    assert p.body == "A man says <S>Hello there.<E> and later <S> Bye! <E>"


def test_parse_audcap_and_no_audio() -> None:
    p = parse_prompt("A woman sings. <S>La la<E> <AUDCAP>Soft piano<ENDAUDCAP>\n")
    assert (p.video_text, p.speech, p.audio_description) == ("A woman sings.", ["La la"], "Soft piano")
    p = parse_prompt("A quiet street at night.")
    assert (p.video_text, p.speech, p.audio_description) == ("A quiet street at night.", [], None)


def test_format_converts_between_the_two_spellings() -> None:
    colon = "A cat. <S>Meow<E> Audio: piano"
    audcap = "A cat. <S>Meow<E> <AUDCAP>piano<ENDAUDCAP>"
    assert format_prompt(colon, "audcap") == audcap
    assert format_prompt(audcap, "audio_colon") == colon
    # already in the target spelling: unchanged
    assert format_prompt(colon, "audio_colon") == colon
    assert format_prompt(audcap, "audcap") == audcap
    # from a parsed prompt, either way
    for text in (colon, audcap):
        assert format_prompt(parse_prompt(text), "audcap") == audcap
        assert format_prompt(parse_prompt(text), "audio_colon") == colon


def test_format_from_parts() -> None:
    p = Prompt(video_text="Two friends talk.", speech=["Hi.", "Hey!"], audio_description="cafe chatter")
    assert format_prompt(p, "audio_colon") == "Two friends talk. <S>Hi.<E> <S>Hey!<E> Audio: cafe chatter"
    assert format_prompt(p, "audcap") == "Two friends talk. <S>Hi.<E> <S>Hey!<E> <AUDCAP>cafe chatter<ENDAUDCAP>"
    assert format_prompt(Prompt("A lake."), "audcap") == "A lake."
    assert validate_prompt(format_prompt(p, "audcap")) is None


def test_unknown_style_and_checkpoint() -> None:
    with pytest.raises(ValueError, match="audio_colon, audcap"):
        format_prompt("x", "colon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="720x720_5s"):
        format_for_checkpoint("x", "1080p")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("  \n\t ", "empty"),
        ("He says <S>hello there", r"unclosed <S> \(add <E>\)"),
        ("He says <S>hello <S>again<E>", "cannot nest"),
        ("A <AUDCAP>rain <S>hi<E><ENDAUDCAP>", "cannot nest"),
        ("A <AUDCAP>rain", "unclosed <AUDCAP>"),
        ("He says hello<E> now", "stray <E>"),
        ("Rain falls.<ENDAUDCAP>", "stray <ENDAUDCAP>"),
        ("A <S>hi<ENDAUDCAP>", "stray <ENDAUDCAP> inside the <S>"),
        ("A man. <S><E>", "empty <S><E>"),
        ("A man. Audio:   ", "empty audio description"),
        ("A man. <AUDCAP> <ENDAUDCAP>", "empty <AUDCAP><ENDAUDCAP>"),
        ("A man. Audio: rain <S>hello<E>", "must come last"),
        ("A man. Audio: rain. Audio: wind", "must come last"),
        ("A man. <AUDCAP>rain<ENDAUDCAP> then he leaves", "must come last"),
        ("A man. <AUDCAP>rain<ENDAUDCAP> <S>hi<E>", "must come last"),
        ("A man. <AUDCAP>rain<ENDAUDCAP> Audio: wind", "must come last"),
        ("A man. Audio: rain <AUDCAP>wind<ENDAUDCAP>", "both 'Audio:' and <AUDCAP>"),
        ("A man. <AUDCAP>rain Audio: wind<ENDAUDCAP>", "both 'Audio:' and <AUDCAP>"),
        ("He says <S>Audio: check<E>", "inside <S>"),
        ("He says <S>hello</E>", "unknown tag '</E>'"),
        ("He says <s>hello<e>", "unknown tag '<s>'"),
        ("He says &lt;S&gt;hello", "HTML-unescaped"),
    ],
)
def test_malformed_prompts_are_rejected_with_a_pointer(text: str, message: str) -> None:
    with pytest.raises(PromptError, match=message) as err:
        validate_prompt(text)
    assert "expected:" in str(err.value) and "Audio:" in str(err.value)
    if text.strip():
        assert "at character" in str(err.value)


def test_error_points_at_the_problem() -> None:
    text = "A man. <S>x<E> <S>y"
    with pytest.raises(PromptError, match=f"at character {text.rindex('<S>')}") as err:
        validate_prompt(text)
    assert "unclosed <S>" in str(err.value) and "'<S>y'" in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        "A quiet lake.",
        "<S>Only speech.<E>",
        "Audio: only sound",
        "Night scene.\nAudio: rain on a tin roof,\nthunder far away",
        "He shouts <S>Go!<E>, she answers <S>Now?<E> <AUDCAP>Wind<ENDAUDCAP>  \n",
        "Tom &amp; Jerry &lt;fast&gt;",
        "&lt;S&gt;Escaped speech tag&lt;E&gt; Audio:&nbsp;wind",
        "A price tag <$5> and a <b>bold</b> sign.",
    ],
)
def test_good_prompts_validate(text: str) -> None:
    assert validate_prompt(text) is None
    parse_prompt(text)
