"""The streaming run's contracts: a failing input becomes a counted rejection (up to a ceiling), outputs go
to any fsspec URL (memory:// here) byte-identical to a local folder, and shard names are stable when clips
are added later."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from data_pipeline import runner, synth
from data_pipeline.config import load_data_config
from data_pipeline.fake_caption_server import FakeCaptionServer
from data_pipeline.manifest import Manifest
from data_pipeline.runner import run_pipeline
from data_pipeline.storage import Storage


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("stream_in")
    synth.make_video(d / "a.mp4", scenes=(5.3,), size=(64, 64))
    synth.make_video(d / "b.mp4", scenes=(5.3,), size=(64, 64), fps=25)
    synth.make_video(d / "later.mp4", scenes=(5.3, 5.3), size=(64, 64))
    return d


def run(inp, out, server, *extra) -> dict:
    return run_pipeline(load_data_config(None, [f"input={inp}", f"output={out}", *synth.TINY_OVERRIDES,
                                                "engine.workers=1", f"caption.base_url={server.base_url}", *extra]))


def subset(videos: Path, dest: Path, names: list[str]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for n in names:
        (dest / n).symlink_to(videos / n)
    return dest


def test_input_deleted_after_listing_is_a_counted_rejection(videos, tmp_path, monkeypatch):
    inp = tmp_path / "in"
    inp.mkdir()
    for n in ("a.mp4", "b.mp4"):
        (inp / n).write_bytes((videos / n).read_bytes())
    listed = runner.list_inputs

    def list_then_delete(*args):
        out = listed(*args)
        (inp / "b.mp4").unlink()  # gone between listing and probing
        return out

    monkeypatch.setattr(runner, "list_inputs", list_then_delete)
    with FakeCaptionServer() as server:
        summary = run(inp, tmp_path / "out", server)
        assert summary["stages"]["probe"]["rejected"] == {"error:FileNotFoundError": 1}
        assert summary["errors_this_run"] == 1 and summary["stages"]["pack"]["samples"] == 1
        (bad,) = [r for r in Manifest(Storage(tmp_path / "out"), "probe").outputs() if r["status"] != "ok"]
        assert "b.mp4" in bad["detail"]
        # A ceiling of 0 errors stops the run (the failure is still recorded; re-runs skip it).
        (inp / "b.mp4").write_bytes((videos / "b.mp4").read_bytes())
        with pytest.raises(RuntimeError, match="engine.max_errors=0"):
            run(inp, tmp_path / "strict", server, "engine.max_errors=0")
        assert len(Storage(tmp_path / "strict").list("manifests/probe")) >= 1


def test_output_to_an_fsspec_url_matches_a_local_folder(videos, tmp_path):
    inp = subset(videos, tmp_path / "in", ["a.mp4", "b.mp4"])
    url = "memory://ovi-test-bucket/run"
    with FakeCaptionServer() as server:
        local = run(inp, tmp_path / "local", server)
        remote = run(inp, url, server)
    assert remote["stages"]["pack"]["samples"] == local["stages"]["pack"]["samples"] == 2
    store = Storage(url)
    index = json.loads(store.read_bytes("shards/index.json"))
    assert index == json.loads((tmp_path / "local" / "shards" / "index.json").read_text())
    for entry in index["shards"]:
        data = store.read_bytes(f"shards/{entry['name']}")
        assert data == (tmp_path / "local" / "shards" / entry["name"]).read_bytes()
        with tarfile.open(fileobj=store.open_read(f"shards/{entry['name']}")) as tf:
            assert sorted({m.name.split(".", 1)[1] for m in tf}) == ["json", "mp4", "wav"]
    # Intermediates were deleted from the bucket once their clips were in shards.
    assert store.list("clips") == [] and store.list("packed") == []
    assert len(store.list("manifests/pack")) == 2
    store.rmtree("")


def test_added_clips_go_to_new_shards_and_old_shards_keep_their_names(videos, tmp_path):
    inp = subset(videos, tmp_path / "in", ["a.mp4", "b.mp4"])
    out = tmp_path / "out"
    with FakeCaptionServer() as server:
        run(inp, out, server, "pack.samples_per_shard=1")
        first = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}
        assert sorted(first) == ["ovi-000000.tar", "ovi-000001.tar"]
        (inp / "later.mp4").symlink_to(videos / "later.mp4")  # 2 more clips; sorts between a and b by id
        summary = run(inp, out, server, "pack.samples_per_shard=1")
    assert summary["stages"]["pack"]["shards_written"] == 2
    now = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}
    assert sorted(now) == [f"ovi-00000{i}.tar" for i in range(4)]
    assert all(now[name] == data for name, data in first.items())  # existing shards untouched
    index = json.loads((out / "shards" / "index.json").read_text())
    assert index["num_samples"] == 4 and [s["name"] for s in index["shards"]] == sorted(now)
    new_keys = {m.name.split(".")[0] for n in ("ovi-000002.tar", "ovi-000003.tar")
                for m in tarfile.open(out / "shards" / n)}
    assert all(k.startswith("later") for k in new_keys)


def test_a_run_stopped_while_writing_shards_finishes_them_under_the_same_names(videos, tmp_path, monkeypatch):
    from data_pipeline.stages import pack

    inp = subset(videos, tmp_path / "in", ["a.mp4", "b.mp4", "later.mp4"])
    with FakeCaptionServer() as server:
        run(inp, tmp_path / "clean", server, "pack.samples_per_shard=1")
        real, calls = pack._write_plan, []

        def dies_on_the_second_shard(job):
            calls.append(job[1].name)
            if len(calls) == 2:
                raise KeyboardInterrupt("killed while writing shards")
            return real(job)

        monkeypatch.setattr(pack, "_write_plan", dies_on_the_second_shard)
        with pytest.raises(KeyboardInterrupt):
            run(inp, tmp_path / "out", server, "pack.samples_per_shard=1")
        assert Storage(tmp_path / "out").exists("shards/pending-plan.json")
        monkeypatch.setattr(pack, "_write_plan", real)
        summary = run(inp, tmp_path / "out", server, "pack.samples_per_shard=1")
    assert summary["stages"]["pack"]["shards_written"] == 3  # the first shard was already done
    want = {p.name: p.read_bytes() for p in (tmp_path / "clean" / "shards").glob("*.tar")}
    assert {p.name: p.read_bytes() for p in (tmp_path / "out" / "shards").glob("*.tar")} == want and len(want) == 4
    assert not Storage(tmp_path / "out").exists("shards/pending-plan.json")
