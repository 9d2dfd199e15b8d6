"""The streaming Ray Data pipeline, on a local Ray cluster (2 CPUs): the same results and byte-identical shards
as the local engine, and a driver killed mid-run (writing to an fsspec URL) resumes with no clip lost or
duplicated."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from data_pipeline import synth
from data_pipeline.config import load_data_config
from data_pipeline.fake_caption_server import FakeCaptionServer
from data_pipeline.manifest import Manifest
from data_pipeline.runner import run_pipeline
from data_pipeline.shards import iter_tar_samples
from data_pipeline.storage import Storage

REPO = Path(__file__).resolve().parents[1]
STAGES = ("probe", "split", "filter", "sync", "caption", "pack")
RUN_TIMEOUT_S = 300


def results(out: Path) -> dict[str, dict]:
    return {s: {e["input"]: e["outputs"] for e in Manifest(Storage(out), s).entries()} for s in STAGES}


def shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    inp = tmp_path_factory.mktemp("ray_in")
    synth.make_video(inp / "a.mp4", scenes=(5.3, 5.3), size=(64, 64))
    synth.make_video(inp / "b.mp4", scenes=(5.3,), size=(64, 64), static=True)
    synth.make_video(inp / "c.mp4", scenes=(5.3,), size=(64, 64), fps=25)
    (inp / "broken.mp4").write_bytes(b"\x00" * 100)
    return inp


@pytest.fixture(scope="module")
def s3fd_weights(tmp_path_factory) -> Path:
    """Randomly initialised S3FD: makes the filter stage load a network, so Ray runs it as an actor pool."""
    import torch
    from syncnet_python.detectors.s3fd.nets import S3FDNet

    path = tmp_path_factory.mktemp("s3fd") / "sfd_face.pth"
    torch.manual_seed(0)
    torch.save(S3FDNet(device="cpu").state_dict(), path)
    return path


@pytest.mark.slow
def test_streaming_ray_pipeline_matches_local_engine(inputs, tmp_path, s3fd_weights):
    from data_pipeline.stages import build_stage

    with FakeCaptionServer() as server:
        common = [f"input={inputs}", *synth.TINY_OVERRIDES, f"caption.base_url={server.base_url}",
                  "filter.face.enabled=true", f"filter.face.s3fd_weights={s3fd_weights}", "filter.face.num_frames=2"]
        assert build_stage("filter", load_data_config(None, common)).loads_models  # the actor-pool path
        local = run_pipeline(load_data_config(None, [*common, f"output={tmp_path / 'local'}", "engine.workers=1"]))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            ray_run = run_pipeline(load_data_config(None, [*common, f"output={tmp_path / 'ray'}", "engine.name=ray"]))
        finally:
            ray.shutdown()
    assert ray_run["engine"] == "ray"
    assert results(tmp_path / "ray") == results(tmp_path / "local")
    # The run did something worth comparing: a rejection at probe and filter, clips in the shards.
    assert local["stages"]["probe"]["rejected"] == {"unreadable": 1}
    assert local["stages"]["filter"]["rejected"] == {"static": 1}
    assert all("face_category" in r for r in Manifest(Storage(tmp_path / "ray"), "filter").accepted())
    assert ray_run["stages"]["pack"]["samples"] == local["stages"]["pack"]["samples"] == 3
    assert shards(tmp_path / "ray") == shards(tmp_path / "local") and "index.json" in shards(tmp_path / "ray")


@pytest.mark.slow
def test_ray_driver_killed_mid_run_resumes_without_loss_or_duplicates(inputs, tmp_path):
    with FakeCaptionServer() as server:
        overrides = [*synth.TINY_OVERRIDES, f"caption.base_url={server.base_url}", "pack.samples_per_shard=2"]
        reference = tmp_path / "reference"
        run_pipeline(load_data_config(None, [f"input={inputs}", f"output={reference}", "engine.workers=1",
                                             *overrides]))
        out = tmp_path / "ray"
        # The output as an fsspec URL: every Ray worker writes results, clips and shards through fsspec.
        cmd = [sys.executable, "-m", "data_pipeline", "run", "--input", str(inputs), "--output", f"local://{out}",
               "--engine", "ray", *overrides]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while len(Storage(out).list("manifests/split")) < 1:  # killed once some work is recorded
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no split result was recorded"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "shards" / "index.json").exists()
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=RUN_TIMEOUT_S)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert shards(out) == shards(reference)
    keys = [k for p in sorted((out / "shards").glob("*.tar")) for k, _ in iter_tar_samples(p)]
    assert len(keys) == len(set(keys)) == 3  # 0 lost, 0 duplicated
    assert results(out) == results(reference)
