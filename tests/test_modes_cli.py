"""V2A, A2V and extension from real files: `ovi-generate --video / --audio / --extend` and OviPipeline.generate.

Media are made with ffmpeg and espeak-ng; the model is the tiny random preset, so what is checked is what the
modes promise regardless of weights: the given medium comes back as given (within the mp4 codecs' error), the
generated one has the clip's length, the given latents reach the model, and bad inputs stop before any model loads.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import forbid_model_loading
from ovi.cli.generate import main
from ovi.config import InferenceConfig, load_config
from ovi.geometry import ClipGeometry
from ovi.media import read_audio, read_video, write_mp4
from ovi.modes import at_fps, prefix_video_frames
from ovi.pipeline import OviPipeline
from ovi.validation import InvalidRequest

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs/inference/tiny_cpu.yaml")
FAST = ["num_frames=25", "num_steps=2"]
GEOMETRY = ClipGeometry.for_frames(25)  # 7 latent frames, 32 audio latents = 16,384 samples
PROMPT = "A dog barks. Audio: barking"  # within the tiny model's 32 text tokens
AAC_FRAME = 1024
AUDIO_TOLERANCE = 0.25  # relative L2 error of AAC at 128 kb/s (ovi.media) on speech and a tone: a few percent


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    src = ["-f", "lavfi", "-i", "testsrc2=size=64x64:rate={rate}:duration={seconds}"]
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration={seconds}"]
    enc = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"]
    made = {"clip24": (24, 2.0, True), "clip30": (30, 1.5, False), "short": (24, 0.3, True)}
    for name, (rate, seconds, sound) in made.items():
        inputs = [a.format(rate=rate, seconds=seconds) for a in src + (tone if sound else [])]
        _ffmpeg(*inputs, *enc, str(d / f"{name}.mp4"))
    subprocess.run(["espeak-ng", "-w", str(d / "speech.wav"), "Hello from the tiny model, this is a test."],
                   check=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(d / "frame.png")
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    return {p.stem: p for p in d.iterdir()}


def _run(tmp: Path, *argv: str) -> tuple[Path, dict]:
    out = tmp / "out"
    assert main(["--config", TINY, "--prompt", PROMPT, *FAST, f"output_dir={out}", *argv]) == 0
    (mp4,) = out.glob("*.mp4")
    return mp4, json.loads(mp4.with_suffix(".json").read_text())


def _mean_level_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _recoded(frames: np.ndarray, tmp: Path) -> np.ndarray:
    """The frames as ovi.media's h264 gives them back: what "equal within codec error" is measured against."""
    return read_video(write_mp4(tmp / "recoded.mp4", frames))[0]


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.linalg.norm(a[:n] - b[:n]) / np.linalg.norm(b[:n]))


def test_v2a_keeps_the_input_frames_and_generates_audio_of_the_clip_length(tmp_path: Path, media) -> None:
    mp4, record = _run(tmp_path, "--video", str(media["clip30"]))  # 30 fps in, 24 fps out
    frames, fps = read_video(mp4)
    source, source_fps = read_video(media["clip30"])
    expected = at_fps(source, source_fps, 24)[:25]
    assert fps == 24 and frames.shape == (25, 64, 64, 3)
    assert _mean_level_error(frames, _recoded(expected, tmp_path)) < 0.5  # the input frames, encoded once
    assert _mean_level_error(frames, source[:25]) > _mean_level_error(frames, expected) + 1  # resampled, not cut
    audio = read_audio(mp4)
    assert abs(len(audio) - GEOMETRY.audio_samples) <= AAC_FRAME and np.abs(audio).max() > 0
    assert record["settings"]["mode"] == "v2a" and record["settings"]["given"] == str(media["clip30"])
    assert record["config"]["video"] == str(media["clip30"])


def test_a2v_keeps_the_input_audio_and_generates_the_video(tmp_path: Path, media) -> None:
    mp4, record = _run(tmp_path, "--audio", str(media["speech"]))
    frames, _ = read_video(mp4)
    assert frames.shape == (25, 64, 64, 3)
    speech = read_audio(media["speech"])[: GEOMETRY.audio_samples]  # espeak's 22.05 kHz, resampled to 16 kHz
    audio = read_audio(mp4)
    assert abs(len(audio) - GEOMETRY.audio_samples) <= AAC_FRAME
    assert _rel_l2(audio, speech) < AUDIO_TOLERANCE
    assert record["settings"]["mode"] == "a2v" and record["settings"]["conditioning"] == "noised"


def test_extension_starts_with_the_inputs_tail(tmp_path: Path, media) -> None:
    mp4, record = _run(tmp_path, "--extend", str(media["clip24"]), "extend_frames=2")
    n = prefix_video_frames(2)  # 5 frames: the causal VAE's first latent frame holds one, the second four
    frames, _ = read_video(mp4)
    source, _ = read_video(media["clip24"])
    assert frames.shape == (25, 64, 64, 3) and record["settings"]["given_frames"] == n
    codec = _mean_level_error(_recoded(source[-n:], tmp_path), source[-n:])
    assert _mean_level_error(frames[:n], source[-n:]) < 1.5 * codec + 0.5
    assert _mean_level_error(frames[:n], source[-n - 1:-1]) > 1.5 * codec + 0.5  # the tail itself, not one earlier
    samples = record["settings"]["given_audio_samples"]
    assert samples == (n * 16000 // 24) // 512 * 512  # the audio latents over the prefix's time
    tone = read_audio(media["clip24"])
    start = round((len(source) - n) / 24 * 16000)
    assert _rel_l2(read_audio(mp4)[:samples], tone[start:start + samples]) < AUDIO_TOLERANCE


def test_the_python_api_takes_arrays_and_the_given_latents_reach_the_model() -> None:
    cfg = load_config(InferenceConfig, TINY, FAST + [f"model={REPO / 'configs/model/tiny.yaml'}"])
    pipe = OviPipeline.from_config(cfg)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
    wave = (rng.standard_normal(20000) * 0.1).astype(np.float32)
    v2a = pipe.generate(PROMPT, video=frames, progress=False)
    assert torch.equal(v2a.video, torch.from_numpy(frames[:25]).permute(3, 0, 1, 2).float() / 127.5 - 1)
    assert v2a.audio.shape == (GEOMETRY.audio_samples,) and v2a.settings["given"] == "<array>"
    a2v = pipe.generate(PROMPT, audio=wave, progress=False)
    assert torch.equal(a2v.audio, torch.from_numpy(wave[: GEOMETRY.audio_samples]))
    assert a2v.video.shape == (3, 25, 64, 64)
    # The continuation depends on the prefix: the given latents condition the model, not only the output splice.
    other = rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
    ext = [pipe.generate(PROMPT, extend=x, progress=False, seed=1) for x in (frames, other)]
    n = prefix_video_frames(cfg.extend_frames or 1)
    assert not torch.equal(ext[0].video[:, n:], ext[1].video[:, n:])
    clean = OviPipeline(pipe.c, load_config(InferenceConfig, TINY, FAST + ["conditioning=clean"]))
    assert not torch.equal(clean.generate(PROMPT, audio=wave, progress=False).video, a2v.video)


def test_audio_from_video_keeps_the_joint_video_and_makes_its_sound_again() -> None:
    cfg = load_config(InferenceConfig, TINY, FAST + [f"model={REPO / 'configs/model/tiny.yaml'}"])
    pipe = OviPipeline.from_config(cfg)
    joint = pipe.generate(PROMPT, progress=False)
    two_pass = OviPipeline(pipe.c, replace(cfg, audio_from_video=True)).generate(PROMPT, progress=False)
    assert torch.equal(two_pass.video, joint.video)  # the first pass is the joint one, same seed
    assert two_pass.audio.shape == joint.audio.shape and not torch.equal(two_pass.audio, joint.audio)
    assert two_pass.settings["audio_from_video"] and not joint.settings["audio_from_video"]
    # Given media have no joint pass: the setting does not apply (a preset may turn it on), V2A is V2A.
    frames = np.zeros((30, 64, 64, 3), np.uint8)
    v2a = OviPipeline(pipe.c, replace(cfg, audio_from_video=True)).generate(PROMPT, video=frames, progress=False)
    assert torch.equal(v2a.audio, pipe.generate(PROMPT, video=frames, progress=False).audio)
    assert not v2a.settings["audio_from_video"] and v2a.settings["mode"] == "v2a"


# (case id, argv, text the one line must contain)
BAD = [
    ("missing", ["--video", "{dir}/nope.mp4"], "file not found"),
    ("not_a_video", ["--video", "{speech}"], "no video stream"),
    ("no_audio_stream", ["--audio", "{clip30}"], "no audio stream"),
    ("too_short", ["--video", "{short}"], "too short (0.33 s, this needs 0.79 s)"),
    ("too_short_audio", ["--audio", "{short}"], "too short"),
    ("corrupt", ["--extend", "{corrupt}"], "cannot be decoded"),
    ("two_modes", ["--video", "{clip24}", "--audio", "{speech}"], "--video and --audio given together"),
    ("image_and_video", ["--video", "{clip24}", "--image", "{frame}"], "--video and --image given together"),
    ("prefix_too_long", ["--extend", "{clip24}", "extend_frames=7"], "extend_frames=7 must be 0 (auto) or 1..6"),
    ("extend_too_short", ["--extend", "{short}", "extend_frames=3"], "or a smaller extend_frames"),
    ("conditioning", ["--audio", "{speech}", "conditioning=fuzzy"], "conditioning='fuzzy' is unknown"),
]


@pytest.mark.parametrize("case, extra, expected", BAD, ids=[c[0] for c in BAD])
def test_bad_given_media_exit_2_with_one_line_and_load_no_model(case: str, extra: list[str], expected: str,
                                                                 tmp_path: Path, media, monkeypatch, capsys) -> None:
    forbid_model_loading(monkeypatch)
    names = {k: str(v) for k, v in media.items()} | {"dir": str(tmp_path)}
    argv = ["--config", TINY, "--prompt", PROMPT, *FAST, f"output_dir={tmp_path / 'out'}",
            *(a.format(**names) for a in extra)]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "out").exists()
