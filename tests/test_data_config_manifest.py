"""Config schema, per-input result files (local and fsspec), and input listing (folders, list files, URLs)."""
from __future__ import annotations

import pytest

from data_pipeline.config import load_data_config
from data_pipeline.manifest import Manifest, ok, reject
from data_pipeline.sources import list_inputs, list_sources, local_source, source_id
from data_pipeline.storage import Storage


def test_config_rejects_misspelt_keys_and_bad_choices():
    with pytest.raises(ValueError, match="min_widht"):
        load_data_config("configs/data/default.yaml", ["filter.min_widht=3"])
    with pytest.raises(ValueError, match="on_no_face_track"):
        load_data_config(None, ["sync.on_no_face_track=maybe"])
    with pytest.raises(ValueError, match="not video-mode stages"):
        load_data_config(None, ["stages=[probe,audio_split]"])
    cfg = load_data_config("configs/data/default.yaml", ["stages=[pack,probe]"])
    assert cfg.stage_names == ("probe", "pack")  # pipeline order, whatever the order given
    paper = load_data_config("configs/data/default.yaml")
    assert (paper.split.num_frames, paper.split.fps, paper.split.sample_rate) == (121, 24, 16_000)
    assert (paper.filter.min_width, paper.filter.min_mean_volume_db) == (720, -60.0)
    assert (paper.sync.max_abs_offset, paper.sync.min_confidence, paper.caption.num_frames) == (3, 1.5, 7)


@pytest.mark.parametrize("root", ["local", "memory://ovi-test-results"])
def test_manifest_is_one_result_file_per_input(tmp_path, root):
    storage = Storage(tmp_path / "out" if root == "local" else root)
    m = Manifest(storage, "split")
    assert m.get("a") is None and "a" not in m
    m.append("a", [ok({"id": "a1"}), ok({"id": "a2"})], seconds=1.5)
    m.append("b", [reject({"id": "b"}, "static", "motion 0")])
    # Recording an input again (a worker killed after writing, then the input redone) replaces, never adds.
    m.append("a", [ok({"id": "a1"}), ok({"id": "a2"})], seconds=2.0)
    fresh = Manifest(storage, "split")  # another process: reads what is stored
    assert [r["id"] for r in fresh.get("a")] == ["a1", "a2"] and "c" not in fresh
    assert [r["id"] for r in fresh.accepted()] == ["a1", "a2"] and fresh.rejected_counts() == {"static": 1}
    assert len(fresh) == 2 and sorted(e["input"] for e in fresh.entries()) == ["a", "b"]
    assert len(storage.list("manifests/split")) == 2  # one file per input, nothing held by a driver
    if root == "local":
        # A temp file left by a killed writer is neither a result nor listed; the run's sweep removes it.
        stray = tmp_path / "out" / "manifests" / "split" / ".x.1234.partial.json"
        stray.write_text("{")
        assert len(Manifest(storage, "split")) == 2 and storage.sweep_temp_files() == 1 and not stray.exists()


def test_skipped_extensions_are_counted(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.mp4", "b.ts", "c.flv", "d.xyz", "e.xyz", "a.json"):
        (tmp_path / "in" / name).write_bytes(b"x")
    records, skipped = list_inputs(str(tmp_path / "in"), load_data_config(None).probe.extensions)
    assert sorted(r["source"] for r in records) == ["a.mp4", "b.ts", "c.flv"]  # broadcast and legacy formats too
    assert skipped == {".xyz": 2}  # counted (and in the summary); sidecar json is not an input


def test_sources_from_folder_list_file_and_fsspec(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for rel in ("a.mp4", "sub/a.mp4", "sub/notes.txt", ".hidden.mp4"):
        (tmp_path / "in" / rel).write_bytes(b"x")
    exts = [".mp4"]
    found = list_sources(str(tmp_path / "in"), exts)
    assert sorted(r["source"] for r in found) == ["a.mp4", "sub/a.mp4"]
    ids = [r["id"] for r in found]
    assert len(set(ids)) == 2 and all("." not in i for i in ids)  # same name, different folders: distinct ids
    assert source_id("sub/a.mp4") == source_id("sub/a.mp4")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n{tmp_path / 'in' / 'a.mp4'}\n")
    assert [r["source"] for r in list_sources(str(listing), exts)] == [str(tmp_path / "in" / "a.mp4")]

    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/videos/x.mp4", b"remote bytes")
    fs.pipe("/bucket/videos/y.txt", b"no")
    (remote,) = list_sources("memory://bucket/videos", exts)
    assert remote["source"].startswith("memory://") and remote["source"].endswith("x.mp4")
    with local_source(remote["source"], "memory://bucket/videos") as local:
        assert local.read_bytes() == b"remote bytes"
    assert not local.exists()  # the download lives only while a stage reads it


def test_quality_filters_are_on_by_default_and_need_their_weights(tmp_path, capsys):
    from data_pipeline import cli
    from data_pipeline.weights import MissingWeights, check_weights, quality_steps

    paper = load_data_config("configs/data/default.yaml", [f"input={tmp_path}", f"output={tmp_path / 'o'}"])
    assert quality_steps(paper) == {"sync": True, "aesthetic": True, "face": True, "motion": True}
    with pytest.raises(MissingWeights) as e:
        check_weights(paper)
    message = str(e.value)
    assert "\n" not in message  # one line
    for needed in ("syncnet_v2.model", "sfd_face.pth", "sac+logos+ava1-l14-linearMSE.pth", "robots.ox.ac.uk",
                   "improved-aesthetic-predictor", "--disable aesthetic,face,sync"):
        assert needed in message
    # The CLI refuses before doing anything: exit 2, that one line, no output folder.
    assert cli.main(["run", "--config", "configs/data/default.yaml", "--input", str(tmp_path), "--output",
                     str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "syncnet_v2.model" in err[0] and not (tmp_path / "o").exists()
    # Disabled explicitly (CLI flag or config), the run may start; a given path must exist.
    check_weights(load_data_config(None, ["sync.enabled=false", "filter.aesthetic.enabled=false",
                                          "filter.face.enabled=false"]))
    with pytest.raises(MissingWeights, match="sync.syncnet_weights=/nope"):
        check_weights(load_data_config(None, ["filter.aesthetic.enabled=false", "filter.face.enabled=false",
                                              f"sync.s3fd_weights={tmp_path}", "sync.syncnet_weights=/nope"]))
    assert load_data_config(None).sync.on_no_face_track == "reject"


def test_gpu_stage_pools_are_sized_by_gpus():
    from data_pipeline.engines.ray_engine import pool_size

    cluster = {"CPU": 64.0, "GPU": 8.0}
    assert pool_size(load_data_config(None, ["sync.resources.num_gpus=1"]), "sync", cluster) == 8
    assert pool_size(load_data_config(None, ["caption.resources.num_gpus=0.5"]), "caption", cluster) == 16
    assert pool_size(load_data_config(None, ["filter.resources.num_cpus=4"]), "filter", cluster) == 16
    with pytest.raises(RuntimeError, match="num_gpus"):
        pool_size(load_data_config(None, ["sync.resources.num_gpus=1"]), "sync", {"CPU": 8.0})
