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


# Reasons a reply is not a caption, beyond the format rules (checked case-insensitively on the raw reply).
_REFUSAL = re.compile(r"^\W*(i'?m sorry|i am sorry|sorry,|i apologi[sz]e|i can(?:no|')t|i am unable|i'm unable|"
                      r"i am not able|unfortunately,? i|as an ai)|as an ai (language )?model", re.I)
_CHATTY_LEAD = re.compile(r"^\W*(sure|certainly|of course|absolutely|okay|ok|here is|here's|below is)\b", re.I)
_CHATTY_TAIL = re.compile(r"(let me know|hope this helps|feel free to|would you like|happy to help)[^.]*\W*$", re.I)
_PLACEHOLDER = re.compile(r"\[[^\]]{1,60}\]|<(?![SE]>)[a-z][a-z _-]{2,40}>|lorem ipsum|\bplaceholder\b|\bTODO\b|"
                          r"\bTBD\b|\binsert (the )?(caption|description)\b|^\W*(n/?a|none|caption)\W*$", re.I)


def reply_problem(text: str) -> Optional[tuple[str, str]]:
    """(reason code, message) when a model's reply is a refusal, a template with placeholders, or a caption
    wrapped in chat (those would train the model to talk back); None otherwise. Codes: ``caption_refusal``,
    ``caption_placeholder``, ``caption_chatty``."""
    if _REFUSAL.search(text):
        return "caption_refusal", "the reply is a refusal, not a caption"
    if _PLACEHOLDER.search(text):
        return "caption_placeholder", "the reply contains template placeholder text"
    if _CHATTY_LEAD.search(text) or _CHATTY_TAIL.search(text):
        return "caption_chatty", "the reply wraps the caption in conversation; reply with the caption only"
    return None


def utterances(text: str) -> list[str]:
    """The spoken words of a valid caption, in order."""
    return parse_prompt(text).speech
