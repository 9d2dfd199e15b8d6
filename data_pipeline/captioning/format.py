"""The caption format Ovi trains on, checked before a caption is accepted.

    <visual description, with every utterance as <S>spoken words<E> in the order it is said> Audio: <audio
    description: for speech the speakers' age, gender, accent, pitch, prosody, emotion and rate; otherwise
    effects, ambience, music>

The structural rules (balanced, non-nested, non-empty ``<S>…<E>``; the audio description last) are the
model's own prompt rules, so they are checked by ``ovi.prompts``; captions must also carry an ``Audio:``
description (the spelling the released 1.1 models train on) and, for video clips, a visual description.
"""
from __future__ import annotations

import re
from typing import Optional

from ovi.prompts import AUDIO_COLON, PromptError, parse_prompt

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
    if AUDIO_COLON not in text:
        return "no 'Audio:' description"
    try:
        prompt = parse_prompt(text)
    except PromptError as e:
        return str(e)
    if require_visual and not prompt.video_text:
        return "no visual description before 'Audio:'"
    return None


def utterances(text: str) -> list[str]:
    """The spoken words of a valid caption, in order."""
    return parse_prompt(text).speech
