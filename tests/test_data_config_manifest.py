"""Config schema, manifests (torn lines, duplicates), and input listing (folders, list files, fsspec URLs)."""
from __future__ import annotations

import pytest

from data_pipeline.config import load_data_config
from data_pipeline.manifest import Manifest, ok, pending, reject
from data_pipeline.sources import list_sources, resolve, source_id


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


def test_manifest_resume_semantics(tmp_path):
    path = tmp_path / "m.jsonl"
    m = Manifest(path)
    m.append("a", [ok({"id": "a1"}), ok({"id": "a2"})])
    m.append("b", [reject({"id": "b"}, "static", "motion 0")])
    with pytest.raises(RuntimeError, match="already recorded"):
        m.append("a", [])
    # A kill during an append leaves a torn last line: it is dropped and the input is simply redone.
    with open(path, "a") as f:
        f.write('{"input": "c", "outputs": [{"id": "c1", "sta')
    m = Manifest(path)
    assert len(m) == 2 and "c" not in m
    assert [r["id"] for r in pending([{"id": "a"}, {"id": "c"}], m)] == ["c"]
    m.append("c", [ok({"id": "c1"})])
    m = Manifest(path)
    assert [r["id"] for r in m.accepted()] == ["a1", "a2", "c1"] and m.rejected_counts() == {"static": 1}
    # Corruption anywhere but the tail is not an interrupted append: refuse to guess.
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="corrupt"):
        Manifest(path)


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
    local = resolve(remote["source"], "memory://bucket/videos", tmp_path / "cache")
    assert local.read_bytes() == b"remote bytes" and local.parent == tmp_path / "cache"
