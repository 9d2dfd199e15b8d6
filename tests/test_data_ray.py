"""The Ray engine, on a local Ray instance, writes the same manifests and shards as the local engine."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from data_pipeline import synth
from data_pipeline.config import load_data_config
from data_pipeline.fake_caption_server import FakeCaptionServer
from data_pipeline.runner import run_pipeline


def manifest_entries(out: Path) -> dict[str, list]:
    return {p.name: sorted((json.loads(x) for x in p.read_text().splitlines()), key=lambda e: e["input"])
            for p in sorted((out / "manifests").glob("*.jsonl")) if p.name != "pack_shards.jsonl"}


@pytest.fixture()
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_matches_local_engine(tmp_path, local_ray):
    inp = tmp_path / "in"
    inp.mkdir()
    synth.make_video(inp / "a.mp4", scenes=(5.3, 5.3), size=(64, 64))
    synth.make_video(inp / "b.mp4", scenes=(5.3,), size=(64, 64), static=True)
    (inp / "broken.mp4").write_bytes(b"\x00" * 100)
    with FakeCaptionServer() as server:
        common = [f"input={inp}", *synth.TINY_OVERRIDES, f"caption.base_url={server.base_url}"]
        local = run_pipeline(load_data_config(None, [*common, f"output={tmp_path / 'local'}", "engine.workers=1"]))
        ray_run = run_pipeline(load_data_config(None, [*common, f"output={tmp_path / 'ray'}", "engine.name=ray",
                                                       "engine.workers=2"]))
    assert ray_run["engine"] == "ray"
    got, want = manifest_entries(tmp_path / "ray"), manifest_entries(tmp_path / "local")
    assert list(got) == list(want) and len(got) == 6
    assert got == want
    # The run did something worth comparing: a rejection at probe and filter, clips in the shards.
    assert local["stages"]["probe"]["rejected"] == {"unreadable": 1}
    assert local["stages"]["filter"]["rejected"] == {"static": 1}
    assert ray_run["stages"]["pack"]["samples"] == local["stages"]["pack"]["samples"] == 2
    for name in ("index.json", "ovi-000000.tar"):
        assert (tmp_path / "ray" / "shards" / name).read_bytes() == (tmp_path / "local" / "shards" / name).read_bytes()
