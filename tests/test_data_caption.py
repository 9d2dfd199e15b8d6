"""Captions: the format validator, and the caption stage against a local OpenAI-format test server."""
from __future__ import annotations

import base64
import io

import pytest
import soundfile as sf

from data_pipeline import synth
from data_pipeline.captioning.backends import CaptionServerError
from data_pipeline.captioning.format import caption_error, normalize_caption, utterances
from data_pipeline.config import load_data_config
from data_pipeline.fake_caption_server import FakeCaptionServer, valid_caption
from data_pipeline.stages import build_stage

GOOD = ("A woman at a desk looks up and says <S>Are you ready?<E> then smiles; a man answers <S>Almost.<E> "
        "Audio: Two adult voices, a woman with a bright mid pitch and a man with a low calm voice, moderate rate.")


@pytest.mark.parametrize("text, error", [
    (GOOD, None),
    ("A quiet street at dusk with cars passing. Audio: traffic ambience and distant horns.", None),
    ("A man talks. <S>hello", "no 'Audio:' description"),
    ("A man says <S>hi<E>. Audio: a voice. Audio: again", "'Audio:' after the 'Audio:' description"),
    ("A man says <S>hi<E>. Audio:   ", "empty audio description"),
    ("A man says <S>hi. Audio: a voice", "'Audio:' inside <S>…<E>"),
    ("A man says hi<E> there. Audio: a voice", "stray <E>"),
    ("A man says <S>one <S>two<E><E>. Audio: a voice", "<S> inside the <S>"),
    ("A man says <S> <E>. Audio: a voice", "empty <S><E> block"),
    ("Audio: a voice says <S>hi<E>", "'<S>' after the 'Audio:' description"),
    ("<S>hi<E> Audio: a voice", "no visual description"),
])
def test_caption_validator(text, error):
    got = caption_error(text)
    assert (got is None) if error is None else (got is not None and got.startswith(error)), got


def test_audio_only_caption_needs_no_visual_part():
    assert caption_error("<S>hi there<E> Audio: a young woman, fast and cheerful.", require_visual=False) is None
    assert caption_error("Audio: rain on a tin roof.", require_visual=False) is None
    assert caption_error("<S>hi there Audio: a voice", require_visual=False) is not None


def test_normalize_and_utterances():
    text = normalize_caption("```\nCaption: A man\n says <S>Hi  there<E>.\nAudio: calm voice.\n```")
    assert text == "A man says <S>Hi there<E>. Audio: calm voice."
    assert utterances(GOOD) == ["Are you ready?", "Almost."]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """One split clip (record + output folder) to caption."""
    d = tmp_path_factory.mktemp("caption")
    (d / "in").mkdir()
    synth.make_video(d / "in" / "talk.mp4", scenes=(5.2,), size=(96, 64), audio="speech")
    cfg = load_data_config(None, [f"input={d / 'in'}", f"output={d / 'out'}", *synth.TINY_OVERRIDES])
    record = {"id": "talk", "source": "talk.mp4"}
    for name in ("probe", "split"):
        record = build_stage(name, cfg).run(record)[0]
    assert record["status"] == "ok"
    return d, record


def caption_with(clip, reply, *overrides):
    d, record = clip
    with FakeCaptionServer(reply) as server:
        cfg = load_data_config(None, [f"input={d / 'in'}", f"output={d / 'out'}", f"caption.base_url={server.base_url}",
                                      *overrides])
        stage = build_stage("caption", cfg)
        stage.setup()
        out = stage.run(record)
    return out, server.requests


def test_caption_request_and_parse(clip):
    out, requests = caption_with(clip, valid_caption)
    assert len(out) == 1 and out[0]["status"] == "ok" and out[0]["caption_attempts"] == 1
    assert caption_error(out[0]["caption"]) is None and len(utterances(out[0]["caption"])) == 1
    (req,) = requests
    parts = req["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text"] + ["image_url"] * 7 + ["input_audio"]
    assert all(p["image_url"]["url"].startswith("data:image/jpeg;base64,") for p in parts[1:8])
    wav = base64.b64decode(parts[-1]["input_audio"]["data"])
    audio, rate = sf.read(io.BytesIO(wav))
    assert rate == 16_000 and len(audio) == clip[1]["num_samples"]  # the whole track, not an excerpt
    assert "<S>" in parts[0]["text"] and "Audio:" in parts[0]["text"]


def test_malformed_replies_are_retried_then_accepted(clip):
    def flaky(request, n):
        return (200, "A scene with <S>unclosed speech. Audio: tone") if n < 3 else valid_caption(request, n)

    out, requests = caption_with(clip, flaky, "caption.max_attempts=3")
    assert out[0]["status"] == "ok" and out[0]["caption_attempts"] == 3 and len(requests) == 3
    # The retry tells the model what was wrong.
    assert "'Audio:' inside <S>…<E>" in requests[1]["messages"][0]["content"][0]["text"]


def test_malformed_replies_end_in_rejection(clip):
    out, requests = caption_with(clip, lambda r, n: (200, "just some words, no audio part"), "caption.max_attempts=2")
    assert len(requests) == 2
    assert out[0]["status"] == "rejected" and out[0]["reason"] == "caption_invalid"
    assert "no 'Audio:' description" in out[0]["detail"]


def test_refused_request_rejects_the_clip(clip):
    out, requests = caption_with(clip, lambda r, n: (400, "audio too long for context"))
    assert len(requests) == 1 and out[0]["reason"] == "caption_refused" and "too long" in out[0]["detail"]


def test_server_errors_are_retried_then_raised(clip, monkeypatch):
    monkeypatch.setattr("data_pipeline.captioning.backends.RETRY_BACKOFF_S", 0.0)
    out, requests = caption_with(clip, lambda r, n: (503, "busy") if n == 1 else valid_caption(r, n))
    assert out[0]["status"] == "ok" and len(requests) == 2
    with pytest.raises(CaptionServerError, match="failed 2 times"):
        caption_with(clip, lambda r, n: (500, "down"), "caption.max_attempts=2")


def test_audio_url_part(clip):
    _, requests = caption_with(clip, valid_caption, "caption.audio_part=audio_url")
    assert requests[0]["messages"][0]["content"][-1]["audio_url"]["url"].startswith("data:audio/wav;base64,")


@pytest.fixture(scope="module")
def tone_clip(tmp_path_factory):
    """A clip nobody speaks in (a steady tone)."""
    d = tmp_path_factory.mktemp("caption_tone")
    (d / "in").mkdir()
    synth.make_video(d / "in" / "tone.mp4", scenes=(5.2,), size=(96, 64), audio="tone")
    cfg = load_data_config(None, [f"input={d / 'in'}", f"output={d / 'out'}", *synth.TINY_OVERRIDES])
    record = {"id": "tone", "source": "tone.mp4"}
    for name in ("probe", "split"):
        record = build_stage(name, cfg).run(record)[0]
    return d, record


SPOKEN = "A man at a desk looks up and says <S>We start now.<E> Audio: A calm adult male voice, moderate rate."


@pytest.mark.parametrize("reply, reason", [
    ((200, "I'm sorry, but I can't describe this video."), "caption_refusal"),
    ((200, "As an AI language model I cannot hear audio. Audio: none"), "caption_refusal"),
    ((200, "[Visual description of the scene] Audio: [audio description]"), "caption_placeholder"),
    ((200, "<visual description> says <S>hi<E>. Audio: <audio description>"), "caption_placeholder"),
    ((200, "Sure! Here is the caption: " + SPOKEN), "caption_chatty"),
    ((200, SPOKEN + " Let me know if you would like any changes!"), "caption_chatty"),
    ((200, SPOKEN[:60], "length"), "caption_truncated"),  # cut off at max_tokens
    ((200, "A man says <S>hi. Audio: a voice"), "caption_invalid"),
])
def test_unusable_replies_are_rejected_with_their_reason(clip, reply, reason):
    out, requests = caption_with(clip, lambda r, n: reply, "caption.max_attempts=2")
    assert len(requests) == 2  # asked again, with the reason, before giving up
    assert out[0]["status"] == "rejected" and out[0]["reason"] == reason, out[0]
    assert "rejected because" in requests[1]["messages"][0]["content"][0]["text"]


def test_speech_tags_on_a_clip_without_speech_are_rejected(clip, tone_clip):
    spoken = lambda r, n: (200, SPOKEN)  # noqa: E731
    out, _ = caption_with(tone_clip, spoken, "caption.max_attempts=1")
    assert out[0]["reason"] == "caption_speech_without_voice"
    out, _ = caption_with(clip, spoken)  # the same words on a clip where someone speaks: accepted
    assert out[0]["status"] == "ok"
    out, _ = caption_with(tone_clip, spoken, "caption.check_speech=false")
    assert out[0]["status"] == "ok"
    out, _ = caption_with(tone_clip, valid_caption)  # a caption without words fits the tone clip
    assert out[0]["status"] == "ok" and "<S>" not in out[0]["caption"]


def test_voice_activity_check():
    import numpy as np

    from data_pipeline.filters.voice import has_speech
    from ovi.toy.sounds import speech

    t = np.arange(5 * 16_000) / 16_000
    assert has_speech(speech("we start the meeting now, please sit down"), 16_000)
    assert not has_speech(np.zeros_like(t), 16_000)
    assert not has_speech(0.3 * np.sin(2 * np.pi * 220 * t), 16_000)  # a steady voiced-pitch tone
    assert not has_speech(0.1 * np.random.default_rng(0).standard_normal(len(t)), 16_000)


def test_fake_caption_server_has_a_command_line(tmp_path):
    import json
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "data_pipeline.fake_caption_server", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert f"127.0.0.1:{port}/v1" in proc.stdout.readline()
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        reply = json.loads(urllib.request.urlopen(req, timeout=10).read())
        assert reply["choices"][0]["message"]["content"].startswith("Audio:")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
