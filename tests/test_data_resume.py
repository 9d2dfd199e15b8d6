"""Kill -9 a real pipeline run twice at different points, restart it, and get the shards of an uninterrupted
run: no clip lost, none duplicated, byte-identical tars. Results are per-input files written by the workers,
so the driver holds nothing that a kill could lose."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_pipeline import synth
from data_pipeline.config import load_data_config
from data_pipeline.fake_caption_server import FakeCaptionServer
from data_pipeline.manifest import Manifest
from data_pipeline.runner import run_pipeline
from data_pipeline.shards import iter_tar_samples
from data_pipeline.storage import Storage

REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.02
RUN_TIMEOUT_S = 180


def recorded(out: Path, stage: str) -> int:
    return len(Storage(out).list(f"manifests/{stage}"))


def start_run(inp: Path, out: Path, overrides: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "data_pipeline", "run", "--input", str(inp), "--output", str(out), *overrides]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, out: Path, stage: str, at_least: int) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while recorded(out, stage) < at_least:
        if proc.poll() is not None:
            raise AssertionError(f"run ended ({proc.returncode}) before {stage} recorded {at_least} inputs:\n"
                                 + proc.stderr.read().decode()[-3000:])
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{stage} never recorded {at_least} inputs")
        time.sleep(POLL_S)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    proc.stderr.close()


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


def results(out: Path, stage: str) -> dict[str, list]:
    return {e["input"]: e["outputs"] for e in Manifest(Storage(out), stage).entries()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("resume_in")
    for i, fps in enumerate((30, 24, 25, 30)):
        synth.make_video(d / f"v{i}.mp4", scenes=(5.3,) if i else (5.3, 5.3), size=(64, 64), fps=fps)
    return d


@pytest.mark.slow
def test_killed_and_restarted_run_matches_uninterrupted(inputs, tmp_path):
    with FakeCaptionServer() as server:
        overrides = [*synth.TINY_OVERRIDES, "engine.workers=1", f"caption.base_url={server.base_url}",
                     "pack.samples_per_shard=2"]
        reference = tmp_path / "reference"
        run_pipeline(load_data_config(None, [f"input={inputs}", f"output={reference}", *overrides]))

        out = tmp_path / "resumed"
        # Kill 1: after the first source is split, before the run is through.
        kill_when(start_run(inputs, out, overrides), out, "split", 1)
        assert recorded(out, "split") < 4 and not (out / "shards").exists()
        # Kill 2: once a clip is packed (the chain runs depth-first, so other sources are still pending).
        kill_when(start_run(inputs, out, overrides), out, "pack", 1)
        assert not (out / "shards" / "index.json").exists()
        done = start_run(inputs, out, overrides)
        _, err = done.communicate(timeout=RUN_TIMEOUT_S)
        assert done.returncode == 0, err.decode()[-3000:]

    expected = shard_bytes(reference)
    assert len(expected) == 3  # 5 clips, 2 per shard
    assert shard_bytes(out) == expected
    assert (out / "shards" / "index.json").read_bytes() == (reference / "shards" / "index.json").read_bytes()
    keys = [k for p in sorted((out / "shards").glob("*.tar")) for k, _ in iter_tar_samples(p)]
    assert len(keys) == len(set(keys)) == 5  # 0 lost, 0 duplicated
    # Every stage holds each input once, with the same records as the uninterrupted run.
    for stage in ("probe", "split", "filter", "sync", "caption", "pack"):
        assert results(out, stage) == results(reference, stage), stage
    # Intermediates of sharded clips are gone; temp files of the killed runs were swept.
    assert not list((out / "clips").glob("*")) and not list((out / "packed").glob("*"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["pack"]["samples"] == 5 and summary["stages"]["probe"]["resumed"] >= 1
