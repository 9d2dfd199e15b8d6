"""Ovi's combined prompt: video description, speech in ``<S>…<E>``, and one audio description.

Two spellings of the audio description exist, one per checkpoint family:

- ``"audio_colon"`` (Ovi 1.1, ``960x960_5s`` / ``960x960_10s``): ``… Audio: rain on a tin roof`` at the end;
- ``"audcap"`` (``720x720_5s``): ``… <AUDCAP>rain on a tin roof<ENDAUDCAP>``.

Speech may appear several times, anywhere before the audio description::

    A man leans in and whispers <S>Did you hear that?<E> then turns. Audio: creaking floor, low wind

The ``Audio:`` rule. The reference's 720x720_5s formatter turns everything from the first ``Audio:`` to the end
of the prompt into the audio caption, so the description *is* the rest of the prompt: it must come last,
and a tag (``<S>``, ``<E>``, ``<AUDCAP>``, ``<ENDAUDCAP>``) or a second ``Audio:`` after it means text that
is not part of the description was written after it; :func:`validate_prompt` rejects that. Likewise a
``<AUDCAP>`` block must be the last thing in the prompt (the 960x960 formatter turns it into ``Audio: …``,
which would swallow anything after it). ``Audio:`` is matched case-sensitively, as the reference does.

The text encoder later unescapes HTML (``&lt;S&gt;`` becomes ``<S>``), so validation also checks the
unescaped text. Formatting (:func:`format_prompt` on a string) reproduces the reference's formatters
character for character and never validates; call :func:`validate_prompt` first.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Literal

SPEECH_OPEN, SPEECH_CLOSE = "<S>", "<E>"
AUDCAP_OPEN, AUDCAP_CLOSE = "<AUDCAP>", "<ENDAUDCAP>"
AUDIO_COLON = "Audio:"

PromptStyle = Literal["audio_colon", "audcap"]
PROMPT_STYLES: tuple[str, ...] = ("audio_colon", "audcap")
# Which spelling each released checkpoint was trained on (the reference engine's per-model formatter).
CHECKPOINT_PROMPT_STYLE: dict[str, str] = {
    "720x720_5s": "audcap",
    "960x960_5s": "audio_colon",
    "960x960_10s": "audio_colon",
}
# The spelling of the captions the data pipeline writes, and so of every model this repo trains.
CAPTION_PROMPT_STYLE: PromptStyle = "audio_colon"

EXPECTED_FORMAT = (
    "expected: '<video description> <S>speech<E> … Audio: <audio description>' "
    "or, for 720x720_5s, '<video description> <S>speech<E> … <AUDCAP><audio description><ENDAUDCAP>'"
)

_TOKEN = re.compile(r"<S>|<E>|<AUDCAP>|<ENDAUDCAP>|Audio:")
# Tag look-alikes (wrong case, closing slash, spaces) that the model would read as plain text.
_NEAR_MISS_TAG = re.compile(r"<\s*/?\s*(?:s|e|audcap|endaudcap)\s*>", re.IGNORECASE)
_EXACT_TAGS = {SPEECH_OPEN, SPEECH_CLOSE, AUDCAP_OPEN, AUDCAP_CLOSE}
# The reference formatters, written as patterns over the raw text (whitespace kept verbatim).
_AUDIO_COLON_TO_END = re.compile(r"Audio:\s*(.*)", re.DOTALL)
_AUDCAP_BLOCK = re.compile(r"<AUDCAP>(.*?)<ENDAUDCAP>", re.DOTALL)
_SPEECH_BLOCK = re.compile(r"\s*<S>(.*?)<E>\s*", re.DOTALL)
_SNIPPET_CHARS = 20  # context shown on each side of a problem in error messages


class PromptError(ValueError):
    """A malformed Ovi prompt; the message says where and shows the expected format."""


@dataclass
class Prompt:
    """A parsed prompt.

    ``video_text``: the prompt without speech and audio description (what a text-to-image model would get).
    ``speech``: each ``<S>…<E>`` content in order. ``audio_description``: the ``Audio:`` / ``<AUDCAP>`` text.
    ``body``: the prompt before the audio description with speech tags in place (keeps where speech sits);
    ``None`` for prompts built from parts, which are then rendered as video text followed by the speech.
    """

    video_text: str
    speech: list[str] = field(default_factory=list)
    audio_description: str | None = None
    body: str | None = None


def _where(text: str, pos: int) -> str:
    lo, hi = max(0, pos - _SNIPPET_CHARS), min(len(text), pos + _SNIPPET_CHARS)
    before = ("…" if lo > 0 else "") + text[lo:pos]
    after = text[pos:hi] + ("…" if hi < len(text) else "")
    return f"at character {pos}: {before!r} ⟨here⟩ {after!r}"


def _fail(problem: str, text: str, pos: int | None = None, note: str = "") -> PromptError:
    where = f" {_where(text, pos)}" if pos is not None else ""
    return PromptError(f"{problem}{where}{note}; {EXPECTED_FORMAT}")


@dataclass
class _Structure:
    speech_spans: list[tuple[int, int]]  # content spans of <S>…<E>
    audio_colon_at: int | None  # index of "Audio:"
    audcap_span: tuple[int, int] | None  # content span of <AUDCAP>…<ENDAUDCAP>
    audcap_open_at: int | None


def _scan(text: str, note: str = "") -> _Structure:
    """Walk the tags once, raising PromptError on the first structural problem."""
    if not text.strip():
        raise PromptError(f"the prompt is empty{note}; {EXPECTED_FORMAT}")
    for m in _NEAR_MISS_TAG.finditer(text):
        if m.group(0) not in _EXACT_TAGS:
            raise _fail(
                f"unknown tag {m.group(0)!r} (tags are case-sensitive: {SPEECH_OPEN}…{SPEECH_CLOSE}, "
                f"{AUDCAP_OPEN}…{AUDCAP_CLOSE})", text, m.start(), note)
    speech_spans: list[tuple[int, int]] = []
    open_tag: tuple[str, int] | None = None  # (tag, position) of the block we are inside
    audio_colon_at = audcap_open_at = None
    audcap_span = None
    for m in _TOKEN.finditer(text):
        tok, pos = m.group(0), m.start()
        if audio_colon_at is not None:
            if tok in (AUDCAP_OPEN, AUDCAP_CLOSE):
                raise _fail(f"both '{AUDIO_COLON}' and {AUDCAP_OPEN} are used; pick one spelling", text, pos, note)
            raise _fail(
                f"{tok!r} after the '{AUDIO_COLON}' description; that description runs to the end of the prompt, "
                "so it must come last (move this text before it)", text, pos, note)
        if audcap_span is not None:
            raise _fail(f"{tok!r} after <ENDAUDCAP>; the audio description must come last", text, pos, note)
        if tok == AUDIO_COLON:
            if open_tag is not None and open_tag[0] == SPEECH_OPEN:
                raise _fail(f"'{AUDIO_COLON}' inside {SPEECH_OPEN}…{SPEECH_CLOSE}; the 720x720_5s formatter would "
                            "cut the speech there (rephrase it)", text, pos, note)
            if open_tag is not None:
                raise _fail(f"both '{AUDIO_COLON}' and {AUDCAP_OPEN} are used; pick one spelling", text, pos, note)
            if audcap_open_at is not None:
                raise _fail(f"both {AUDCAP_OPEN} and '{AUDIO_COLON}' are used; pick one spelling", text, pos, note)
            if not text[m.end():].strip():
                raise _fail(f"empty audio description after '{AUDIO_COLON}'", text, pos, note)
            audio_colon_at = pos
        elif tok in (SPEECH_OPEN, AUDCAP_OPEN):
            if open_tag is not None:
                raise _fail(f"{tok} inside the {open_tag[0]} opened at character {open_tag[1]}: tags cannot nest "
                            f"(is a closing {SPEECH_CLOSE if open_tag[0] == SPEECH_OPEN else AUDCAP_CLOSE} "
                            "missing?)", text, pos, note)
            open_tag = (tok, pos)
            if tok == AUDCAP_OPEN:
                audcap_open_at = pos
        else:  # a closing tag
            opener = SPEECH_OPEN if tok == SPEECH_CLOSE else AUDCAP_OPEN
            if open_tag is None or open_tag[0] != opener:
                inside = f" inside the {open_tag[0]} opened at character {open_tag[1]}" if open_tag else ""
                raise _fail(f"stray {tok}{inside} with no {opener} before it", text, pos, note)
            start = open_tag[1] + len(opener)
            if not text[start:pos].strip():
                raise _fail(f"empty {opener}{tok} block", text, open_tag[1], note)
            if tok == SPEECH_CLOSE:
                speech_spans.append((start, pos))
            else:
                audcap_span = (start, pos)
                if text[m.end():].strip():
                    raise _fail("text after <ENDAUDCAP>; the audio description must come last",
                                text, m.end(), note)
            open_tag = None
    if open_tag is not None:
        closer = SPEECH_CLOSE if open_tag[0] == SPEECH_OPEN else AUDCAP_CLOSE
        raise _fail(f"unclosed {open_tag[0]} (add {closer})", text, open_tag[1], note)
    return _Structure(speech_spans, audio_colon_at, audcap_span, audcap_open_at)


def validate_prompt(text: str) -> None:
    """Raise :class:`PromptError` naming the problem, its position and the expected format; else return."""
    if not isinstance(text, str):
        raise PromptError(f"the prompt must be a str, got {type(text).__name__}; {EXPECTED_FORMAT}")
    _scan(text)
    unescaped = html.unescape(html.unescape(text))  # what the text encoder's cleaning produces
    if unescaped != text:
        _scan(unescaped, note=" (in the HTML-unescaped text the text encoder sees)")


def parse_prompt(text: str) -> Prompt:
    """Validate ``text`` and split it into video text, speech and audio description (either spelling)."""
    validate_prompt(text)
    s = _scan(text)
    audio: str | None = None
    if s.audio_colon_at is not None:
        body = text[: s.audio_colon_at]
        audio = text[s.audio_colon_at + len(AUDIO_COLON):].strip()
    elif s.audcap_span is not None:
        body = text[: s.audcap_open_at]
        audio = text[s.audcap_span[0]: s.audcap_span[1]].strip()
    else:
        body = text
    body = body.rstrip()
    speech = [text[a:b].strip() for a, b in s.speech_spans]
    video_text = _SPEECH_BLOCK.sub(" ", body).strip()
    return Prompt(video_text=video_text, speech=speech, audio_description=audio, body=body)


def format_prompt(prompt: str | Prompt, style: PromptStyle) -> str:
    """The prompt spelled for a checkpoint family.

    A string is rewritten exactly as the reference engine's formatter does (everything else kept verbatim,
    no validation): ``"audcap"`` turns the first ``Audio:`` and all after it into ``<AUDCAP>…<ENDAUDCAP>``,
    ``"audio_colon"`` turns every ``<AUDCAP>x<ENDAUDCAP>`` into ``Audio: x``. A :class:`Prompt` is rendered
    as its body (or video text then speech) followed by the audio description in that style.
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")
    if isinstance(prompt, str):
        if style == "audcap":
            return _AUDIO_COLON_TO_END.sub(lambda m: f"{AUDCAP_OPEN}{m.group(1)}{AUDCAP_CLOSE}", prompt, count=1)
        return _AUDCAP_BLOCK.sub(lambda m: f"{AUDIO_COLON} {m.group(1)}", prompt)
    body = prompt.body
    if body is None:
        body = " ".join([prompt.video_text, *(f"{SPEECH_OPEN}{s}{SPEECH_CLOSE}" for s in prompt.speech)])
    body = body.strip()
    if prompt.audio_description is None:
        return body
    audio = (f"{AUDCAP_OPEN}{prompt.audio_description}{AUDCAP_CLOSE}" if style == "audcap"
             else f"{AUDIO_COLON} {prompt.audio_description}")
    return f"{body} {audio}" if body else audio


def style_for_checkpoint(checkpoint: str) -> str:
    """The prompt style a released checkpoint (``720x720_5s``, ``960x960_5s``, ``960x960_10s``) expects."""
    try:
        return CHECKPOINT_PROMPT_STYLE[checkpoint]
    except KeyError:
        raise ValueError(
            f"unknown checkpoint {checkpoint!r}; known: {', '.join(CHECKPOINT_PROMPT_STYLE)}"
        ) from None


def format_for_checkpoint(text: str, checkpoint: str) -> str:
    """``text`` rewritten as the reference engine does for ``checkpoint`` (positive prompt only)."""
    return format_prompt(text, style_for_checkpoint(checkpoint))
