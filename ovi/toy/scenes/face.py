"""Face: a drawn face says one sentence (espeak-ng); its mouth opening follows the loudness of the speech.

The mouth opening per video frame is the speech RMS over that frame's 1/24 s window, lightly smoothed and
scaled to [0, 1]; it is stored in the ground truth (``mouth_opening``) and drawn as the mouth's height.
"""
from __future__ import annotations

import numpy as np

from ovi.toy import draw, sounds
from ovi.toy.clip import FPS, NUM_FRAMES, NUM_SAMPLES, SAMPLE_RATE
from ovi.toy.hearing import frame_rms

KIND = "face"
SENTENCES = (
    "The red ball is on the table.",
    "I will meet you at the station.",
    "Please close the window.",
    "It is going to rain today.",
    "My cat sleeps all afternoon.",
    "We walked along the river.",
    "Can you hear the music?",
    "The train leaves at nine.",
    "She bought three green apples.",
    "Turn left at the next corner.",
    "This coffee is very hot.",
    "Good morning, how are you?",
    "The garden needs more water.",
    "Let us start the meeting now.",
    "He found the keys under the bed.",
    "Nobody knows the answer yet.",
)
# (espeak-ng voice, how the caption names it)
VOICES = (("en-us", "male"), ("en-us+f3", "female"), ("en-gb", "male"), ("en-gb+f2", "female"))
SKIN_TONES: dict[str, tuple[int, int, int]] = {
    "pale": (238, 206, 182), "tan": (206, 156, 112), "brown": (146, 98, 66), "dark": (96, 64, 46),
}
HAIR: dict[str, tuple[int, int, int]] = {"black": (25, 22, 22), "brown": (92, 58, 30), "blond": (222, 192, 110)}
MOUTH_RGB = (70, 18, 24)
MOUTH_MAX_HALF_HEIGHT = 0.07  # fraction of the frame side, at full opening
MAX_SPEECH_S = NUM_SAMPLES / SAMPLE_RATE - 0.5  # leave room before and after the sentence
SPEED_STEP_WPM = 20


def mouth_curve(track: np.ndarray) -> np.ndarray:
    """[NUM_FRAMES] mouth opening in [0, 1]: the speech's RMS per video frame, smoothed over three frames
    and divided by its maximum."""
    rms = frame_rms(track, SAMPLE_RATE, FPS, NUM_FRAMES)
    smooth = np.convolve(np.pad(rms, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    return (smooth / max(float(smooth.max()), 1e-9)).astype(np.float32)


def _speech(rng: np.random.Generator) -> tuple[str, str, str, int, np.ndarray]:
    text = str(SENTENCES[rng.integers(len(SENTENCES))])
    voice, gender = VOICES[rng.integers(len(VOICES))]
    speed, pitch = int(rng.integers(150, 176)), int(rng.integers(35, 66))
    wav = sounds.speech(text, voice, speed, pitch)
    while len(wav) > MAX_SPEECH_S * SAMPLE_RATE:  # too long for the clip: say it faster
        speed += SPEED_STEP_WPM
        wav = sounds.speech(text, voice, speed, pitch)
    return text, voice, gender, speed, wav


def render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    text, voice, gender, speed, wav = _speech(rng)
    start = int(rng.integers(0, NUM_SAMPLES - len(wav) + 1))
    voice_track = np.zeros(NUM_SAMPLES, np.float32)
    sounds.place(voice_track, wav, start)
    opening = mouth_curve(voice_track)
    skin, hair = str(rng.choice(list(SKIN_TONES))), str(rng.choice(list(HAIR)))
    backdrop = str(rng.choice(list(draw.BACKDROPS)))
    s = float(size)
    frames = draw.canvas(NUM_FRAMES, size, draw.BACKDROPS[backdrop])
    still = (1, size)  # head, hair and eyes do not move: drawn once, broadcast over frames
    layers = [
        (draw.ellipse_coverage(*still, 0.40 * s, 0.5 * s, 0.30 * s, 0.31 * s), HAIR[hair]),
        (draw.ellipse_coverage(*still, 0.54 * s, 0.5 * s, 0.34 * s, 0.27 * s), SKIN_TONES[skin]),
    ]
    for ex in (0.39, 0.61):
        layers.append((draw.ellipse_coverage(*still, 0.46 * s, ex * s, 0.045 * s, 0.06 * s), (245, 245, 245)))
        layers.append((draw.disc_coverage(*still, 0.46 * s, ex * s, 0.028 * s), (30, 30, 40)))
    for cover, rgb in layers:
        draw.blend(frames, np.broadcast_to(cover, frames.shape[:3]), rgb)
    mouth = draw.ellipse_coverage(NUM_FRAMES, size, 0.70 * s, 0.5 * s, 0.4 + opening * MOUTH_MAX_HALF_HEIGHT * s,
                                  0.1 * s)
    draw.blend(frames, mouth, MOUTH_RGB)
    audio = sounds.noise_bed(rng) + voice_track
    truth = {"kind": KIND, "objects": [{"skin": skin, "hair": hair}], "count": 1, "events": [],
             "sentence": text, "voice": voice, "gender": gender, "speed_wpm": speed, "background": backdrop,
             "speech_start_s": start / SAMPLE_RATE, "speech_end_s": (start + len(wav)) / SAMPLE_RATE,
             "mouth_opening": [round(float(v), 4) for v in opening]}
    return draw.to_uint8(frames), sounds.normalise(audio), truth
