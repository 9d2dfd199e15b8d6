"""Captions in the project's prompt format, worded from a scene's ground truth with varied phrasing.

    <what is seen> [<S>spoken sentence<E>] Audio: <what is heard>

Every caption passes ``ovi.prompts.validate_prompt``; the wording is drawn from ``rng`` so a seed fixes it.
"""
from __future__ import annotations

import numpy as np

from ovi.prompts import AUDIO_COLON, SPEECH_CLOSE, SPEECH_OPEN, validate_prompt

NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
HIGH_PITCH_HZ, LOW_PITCH_HZ = 550.0, 350.0


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[rng.integers(len(options))])


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def pitch_word(hz: float) -> str:
    return "high" if hz >= HIGH_PITCH_HZ else "low" if hz < LOW_PITCH_HZ else "mid-pitched"


def _pitches(objects: list[dict]) -> str:
    """'high', 'high and low', 'high, mid-pitched and low' (from high to low)."""
    order = ("high", "mid-pitched", "low")
    return _join([w for w in order if w in {pitch_word(o["pitch_hz"]) for o in objects}])


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _objects(colours: list[str], noun: str, rng: np.random.Generator) -> str:
    """'A red ball', 'Two red balls', 'A red ball and a blue ball', 'Three balls (red, green and blue)'."""
    n = len(colours)
    if n == 1:
        return _a(colours[0]).capitalize() + f" {noun}"
    if len(set(colours)) == 1:
        return f"{NUMBER_WORDS[n].capitalize()} {colours[0]} {noun}s"
    if rng.random() < 0.5:
        return _join([f"{_a(c)} {noun}" for c in colours]).capitalize()
    return f"{NUMBER_WORDS[n].capitalize()} {noun}s ({_join(colours)})"


def _bounce(t: dict, rng: np.random.Generator) -> tuple[str, str]:
    colours = [o["colour"] for o in t["objects"]]
    verb = _pick(rng, ("bounce", "hop", "keep bouncing", "bounce up and down")) if len(colours) > 1 else \
        _pick(rng, ("bounces", "hops", "keeps bouncing", "bounces up and down"))
    seen = f"{_objects(colours, 'ball', rng)} {verb} on a {t['floor']} floor in front of a {t['background']} wall."
    pitches = _pitches(t["objects"])
    knock = _pick(rng, ("knocks", "taps", "clacks"))
    heard = _pick(rng, (f"sharp {pitches} {knock} on every bounce",
                        f"{_a(pitches)} {knock[:-1]} each time a ball hits the floor",
                        f"short {pitches} {knock} in time with the bounces, faint room noise"))
    return seen, heard


def _flash(t: dict, rng: np.random.Generator) -> tuple[str, str]:
    colours = [o["colour"] for o in t["objects"]]
    noun = _pick(rng, ("lamp", "light"))
    if t["objects"][0]["shape"] == "square":
        noun = f"square {noun}"
    verb = _pick(rng, ("flash", "blink", "light up")) if len(colours) > 1 else \
        _pick(rng, ("flashes", "blinks", "lights up"))
    when = _pick(rng, ("now and then", "at irregular times", "one flash at a time"))
    seen = f"{_objects(colours, noun, rng)} {verb} {when} against a {t['background']} wall."
    pitches = _pitches(t["objects"])
    heard = _pick(rng, (f"a short {pitches} beep with every flash",
                        f"one clean {pitches} tone per flash, otherwise quiet",
                        f"electronic {pitches} beeps synchronised with the flashes"))
    return seen, heard


def _face(t: dict, rng: np.random.Generator) -> tuple[str, str]:
    o = t["objects"][0]
    who = _pick(rng, ("A cartoon face", "A drawn face", "A simple cartoon head"))
    seen = (f"{who} with {o['skin']} skin and {o['hair']} hair on a {t['background']} background "
            f"{_pick(rng, ('says', 'looks ahead and says', 'speaks'))} "
            f"{SPEECH_OPEN}{t['sentence']}{SPEECH_CLOSE} {_pick(rng, ('while its mouth moves.', 'then stops.', ''))}")
    pace = "quickly" if t["speed_wpm"] >= 180 else "at a steady pace"
    heard = _pick(rng, (f"a {t['gender']} synthetic voice speaking {pace}, flat robotic tone",
                        f"robotic text-to-speech, {t['gender']} voice, {pace}, quiet background"))
    return seen.strip(), heard


_VIEWS = {
    "sky": ("A blue sky with white clouds drifting slowly.", "Clouds drift across a pale blue sky."),
    "hills": ("Green hills under a blue sky, the view drifting slowly.", "A calm landscape of green hills."),
    "room": ("An empty room with a window and a wooden floor; nothing moves.", "A still, empty room lit by a window."),
}
_SOUNDS = {
    "hum": ("a steady low electrical hum", "constant mains hum, no other sounds"),
    "wind": ("steady wind noise with no distinct sounds", "a soft continuous rush of wind"),
    "rain": ("steady rain pattering, no distinct events", "continuous light rain"),
}


def _ambient(t: dict, rng: np.random.Generator) -> tuple[str, str]:
    return _pick(rng, _VIEWS[t["view"]]), _pick(rng, _SOUNDS[t["sound"]])


_WRITERS = {"bounce": _bounce, "flash": _flash, "face": _face, "ambient": _ambient}


def caption(truth: dict, rng: np.random.Generator) -> str:
    """A valid prompt describing the scene in ``truth`` (its ``kind`` picks the wording)."""
    seen, heard = _WRITERS[truth["kind"]](truth, rng)
    text = f"{seen} {AUDIO_COLON} {heard}."
    validate_prompt(text)
    return text
