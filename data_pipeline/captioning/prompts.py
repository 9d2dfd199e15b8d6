"""What the MLLM is asked. The wording asks for exactly what ``captioning.format`` validates."""
from __future__ import annotations

VIDEO_INSTRUCTION = """You are given {num_frames} frames sampled evenly from a {duration:.2f}-second video clip, \
in order, and the clip's complete audio track.

Write one detailed paragraph describing the video: the setting, the people or objects, their appearance, \
actions and expressions, camera framing and motion, lighting and style, in the order things happen.
Whenever someone speaks, insert the exact words spoken, transcribed from the audio, inside <S> and <E> tags at \
the point where they are said, in chronological order, e.g. The man looks up and says <S>Where were you?<E> \
while the woman sets down her bag. Use one <S>...<E> pair per utterance and never nest tags. If nobody speaks, \
use no tags.
End the caption with a single line that starts with "Audio:" and describes the sound. For speech, describe \
each speaker's apparent age, gender, accent, pitch, prosody, emotion and speaking rate. Otherwise describe the \
sound effects, ambience and music. Nothing may follow the Audio: description.
Reply with the caption only."""

AUDIO_INSTRUCTION = """You are given a {duration:.2f}-second audio clip.

If there is speech, transcribe the exact words inside <S> and <E> tags, one pair per utterance, in \
chronological order, and nothing else before the audio description. If there is no speech, write no tags.
Then write a single line that starts with "Audio:" and describes the sound. For speech, describe each \
speaker's apparent age, gender, accent, pitch, prosody, emotion and speaking rate. Otherwise describe the sound \
effects, ambience and music. Nothing may follow the Audio: description.
Reply with this text only."""

RETRY_NOTE = """Your previous reply was rejected because: {error}. Follow the format exactly."""


def instruction(mode: str, duration_s: float, num_frames: int, previous_error: str | None = None) -> str:
    text = (VIDEO_INSTRUCTION if mode == "video" else AUDIO_INSTRUCTION).format(
        num_frames=num_frames, duration=duration_s)
    if previous_error:
        text += "\n\n" + RETRY_NOTE.format(error=previous_error)
    return text
