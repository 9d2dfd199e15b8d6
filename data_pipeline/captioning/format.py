"""The caption format Ovi trains on, checked before a caption is accepted.

    <visual description, with every utterance as <S>spoken words<E> in the order it is said> Audio: <audio
    description: for speech the speakers' age, gender, accent, pitch, prosody, emotion and rate; otherwise
    effects, ambience, music>

Rules: ``<S>``/``<E>`` alternate and are balanced (no nesting), no utterance is empty, exactly one ``Audio:``
marker, it comes after every utterance, and both the text before it and the description after it are
non-empty. (Local copy of the rules; ``ovi.prompts`` holds the model side of the same format.)
"""
from __future__ import annotations

import re
from typing import Optional

SPEECH_OPEN, SPEECH_CLOSE, AUDIO_MARKER = "<S>", "<E>", "Audio:"
_TAG = re.compile(r"<S>|<E>")
_UTTERANCE = re.compile(r"<S>.*?<E>", re.S)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_LEADS = ("caption:", "Caption:", "**Caption:**")


def normalize_caption(text: str) -> str:
    """Undo harmless chat habits (code fences, a leading "Caption:", runs of whitespace)."""
    text = _FENCE.sub("", text.strip()).strip()
    for lead in _LEADS:
        if text.startswith(lead):
            text = text[len(lead):].strip()
    return re.sub(r"\s+", " ", text)


def caption_error(text: str, *, require_visual: bool = True) -> Optional[str]:
    """Why ``text`` is not a valid caption, or None when it is. ``require_visual=False`` for audio-only
    captions, which may be just an utterance and the audio description."""
    if AUDIO_MARKER not in text:
        return "no 'Audio:' description"
    if text.count(AUDIO_MARKER) > 1:
        return "more than one 'Audio:' marker"
    body, description = text.split(AUDIO_MARKER)
    if not description.strip():
        return "empty audio description"
    if _TAG.search(description):
        return "speech tags after 'Audio:' (the audio description must come last)"
    expect = SPEECH_OPEN
    last = 0
    for m in _TAG.finditer(body):
        if m.group() != expect:
            return f"unbalanced speech tags: found {m.group()} where {expect} was expected"
        if expect == SPEECH_CLOSE and not body[last:m.start()].strip():
            return "empty <S><E> utterance"
        expect = SPEECH_CLOSE if expect == SPEECH_OPEN else SPEECH_OPEN
        last = m.end()
    if expect == SPEECH_CLOSE:
        return "unclosed <S> tag"
    if require_visual and not _UTTERANCE.sub("", body).strip():
        return "no visual description before 'Audio:'"
    return None


def utterances(text: str) -> list[str]:
    """The spoken words of a valid caption, in order."""
    return [m.group()[len(SPEECH_OPEN):-len(SPEECH_CLOSE)].strip() for m in _UTTERANCE.finditer(text)]
