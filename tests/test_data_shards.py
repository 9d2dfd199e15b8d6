"""Pack and shards: what webdataset reads back equals what was written; crop/resize rules; shard sizing."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from data_pipeline import media, synth
from data_pipeline.config import load_data_config
from data_pipeline.fake_caption_server import FakeCaptionServer
from data_pipeline.manifest import Manifest
from data_pipeline.storage import Storage
from data_pipeline.runner import run_pipeline
from data_pipeline.shards import (Sample, count_samples, iter_tar_samples, plan_shards, read_index, shard_urls,
                                  write_index, write_shard)
from data_pipeline.stages.pack import LUMA, black_margin_crop
from ovi.imaging import resize_frames, size_for_area

REQUIRED_META = {"caption", "num_frames", "fps", "width", "height", "sample_rate", "num_samples", "source",
                 "start_s", "end_s", "scores"}


def read_samples(shard_dir: Path) -> list[dict]:
    ds = wds.WebDataset(shard_urls(shard_dir), shardshuffle=False, nodesplitter=wds.split_by_node)
    return list(ds)


def test_target_size_rules():
    assert size_for_area(720, 720, 720 * 720, 32) == (704, 704)  # the released model's square size
    h, w = size_for_area(1920, 1080, 720 * 720, 32)
    assert (w, h) == (960, 512) and w % 32 == 0 and h % 32 == 0 and w * h <= 720 * 720
    h, w = size_for_area(1080, 1920, 720 * 720, 32)
    assert (w, h) == (512, 960)


def test_black_margin_crop_finds_the_picture():
    frames = np.zeros((4, 72, 96, 3), np.uint8)
    frames[:, 12:60, 8:88] = np.random.default_rng(0).integers(40, 255, (4, 48, 80, 3))
    assert black_margin_crop(frames, 24) == (8, 12, 80, 48)
    dark_scene = np.full((4, 72, 96, 3), 10, np.uint8)  # all dark: nothing to crop to, keep the frame
    assert black_margin_crop(dark_scene, 24) == (0, 0, 96, 72)


def test_shard_roundtrip_exact(tmp_path):
    rng = np.random.default_rng(1)
    written = {}
    samples = []
    for i in range(5):
        frames = rng.integers(0, 255, (3, 8, 16, 3), dtype=np.uint8)
        audio = (rng.standard_normal(1600) * 0.1).astype(np.float32)
        npy, wav = io.BytesIO(), io.BytesIO()
        np.save(npy, frames)
        sf.write(wav, audio, 16_000, subtype="PCM_16", format="WAV")
        meta = {"caption": f"clip {i} <S>hi<E> Audio: a voice", "num_frames": 3, "id": f"k{i:02d}"}
        samples.append(Sample(f"k{i:02d}", {"npy": npy.getvalue(), "wav": wav.getvalue()}, meta))
        written[f"k{i:02d}"] = (frames, sf.read(io.BytesIO(wav.getvalue()), dtype="int16")[0], meta)
    plans = plan_shards(samples, "t", samples_per_shard=2, max_bytes=10**9)
    assert [len(p.samples) for p in plans] == [2, 2, 1] and [p.name for p in plans][0] == "t-000000.tar"
    entries = [{"name": p.name, "num_samples": len(p.samples), "num_bytes": write_shard(tmp_path / p.name, p)}
               for p in plans]
    index = write_index(tmp_path, entries, "audio_video")
    back = read_index(tmp_path)
    assert index["num_samples"] == back.num_samples == 5 and back.kind == "audio_video"
    assert [{"name": s.name, "num_samples": s.num_samples, "num_bytes": s.num_bytes} for s in back.shards] == entries
    # The trainer's reader (resumable, tarfile) sees what webdataset sees, and the counts the index holds.
    assert [count_samples(s.path) for s in back.shards] == [e["num_samples"] for e in entries]
    assert [k for s in back.shards for k, _ in iter_tar_samples(s.path)] == sorted(written)
    got = read_samples(tmp_path)
    assert [s["__key__"] for s in got] == sorted(written)
    for s in got:
        frames, audio, meta = written[s["__key__"]]
        assert np.array_equal(np.load(io.BytesIO(s["npy"])), frames)
        assert np.array_equal(sf.read(io.BytesIO(s["wav"]), dtype="int16")[0], audio)
        assert json.loads(s["json"]) == meta
    # Same plan, same bytes: shards are reproducible.
    again = tmp_path / "again"
    again.mkdir()
    assert write_shard(again / plans[0].name, plans[0]) and \
        (again / plans[0].name).read_bytes() == (tmp_path / plans[0].name).read_bytes()


def test_byte_limit_closes_shards():
    samples = [Sample(f"k{i}", {"wav": b"x" * 3000}, {"id": f"k{i}"}) for i in range(4)]
    # Each sample takes 4608 tar bytes (headers + 512-byte padding): two fit under 10 kB, three do not.
    plans = plan_shards(samples, "t", samples_per_shard=100, max_bytes=10_000)
    assert [len(p.samples) for p in plans] == [2, 2]


@pytest.fixture(scope="module")
def packed_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("pack")
    (d / "in").mkdir()
    synth.make_video(d / "in" / "a.mp4", scenes=(5.3,), size=(96, 64), audio="speech")
    # A letterboxed, pillarboxed source: 96x64 picture inside a 128x96 black frame.
    media.run_ffmpeg(["-y", "-f", "lavfi", "-t", "5.3", "-i", "testsrc2=size=96x64:rate=30", "-f", "lavfi", "-t",
                      "5.3", "-i", "sine=frequency=300:sample_rate=16000", "-vf", "pad=128:96:16:16:black",
                      "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(d / "in" / "boxed.mp4")])
    runs = {}
    with FakeCaptionServer() as server:
        for member in ("mp4", "npy"):
            cfg = load_data_config(None, [f"input={d / 'in'}", f"output={d / member}", *synth.TINY_OVERRIDES,
                                          "engine.workers=1", f"caption.base_url={server.base_url}",
                                          "keep_intermediates=true",
                                          f"pack.video_member={member}", "pack.target_area_side=64"])
            run_pipeline(cfg)
            runs[member] = d / member
    return runs


def test_pipeline_shards_read_back_equal(packed_run):
    out = packed_run["mp4"]
    records = {r["id"]: r for r in Manifest(Storage(out), "pack").accepted()}
    samples = read_samples(out / "shards")
    assert sorted(s["__key__"] for s in samples) == sorted(records) and len(samples) == 2
    index = read_index(out)  # the dataset folder or its shards/ folder
    assert index.num_samples == 2 and index.kind == "audio_video" and index.root == out / "shards"
    for s in samples:
        rec, meta = records[s["__key__"]], json.loads(s["json"])
        assert REQUIRED_META <= set(meta)
        assert meta["caption"] == rec["caption"] and meta["scores"] == rec["scores"]
        assert (meta["source"], meta["start_s"], meta["end_s"]) == (rec["source"], rec["start_s"], rec["end_s"])
        assert meta["width"] % 32 == 0 and meta["height"] % 32 == 0
        # Video: decoding the shard member gives the frames of the packed file, at the size the json says.
        member = out / "member.mp4"
        member.write_bytes(s["mp4"])
        frames = media.decode_frames(member)
        assert frames.shape == (meta["num_frames"], meta["height"], meta["width"], 3) == (121,) + frames.shape[1:]
        assert np.array_equal(frames, media.decode_frames(out / rec["packed_video"]))
        assert media.probe(member).fps == pytest.approx(meta["fps"]) == 24
        # Audio: bit-exact with the clip's wav, 16 kHz mono, the length the json says.
        audio, rate = sf.read(io.BytesIO(s["wav"]), dtype="int16")
        assert rate == meta["sample_rate"] == 16_000 and audio.ndim == 1 and len(audio) == meta["num_samples"]
        assert np.array_equal(audio, sf.read(out / rec["audio"], dtype="int16")[0])
    boxed = next(json.loads(s["json"]) for s in samples if s["__key__"].startswith("boxed"))
    assert boxed["crop"] == [16, 16, 96, 64]  # the black bars are gone
    assert (boxed["height"], boxed["width"]) == size_for_area(96, 64, 64 * 64, 32) == (32, 64)


def test_npy_member_holds_the_packed_frames(packed_run):
    out = packed_run["npy"]
    records = {r["id"]: r for r in Manifest(Storage(out), "pack").accepted()}
    for s in read_samples(out / "shards"):
        frames = np.load(io.BytesIO(s["npy"]))
        meta = json.loads(s["json"])
        assert frames.dtype == np.uint8 and frames.shape == (121, meta["height"], meta["width"], 3)
        assert np.array_equal(frames, np.load(out / records[s["__key__"]]["packed_video"]))


def test_packing_resizes_with_the_one_resize_function(packed_run):
    """Packed frames are ovi.imaging.resize_frames of the clip's cropped source frames: exactly for npy members
    (split keeps a near-lossless intermediate), within one h264 encode for mp4 members (split encodes the
    packed picture once; compared in luma: yuv420 halves the chroma of these tiny, busy frames)."""
    for member in ("npy", "mp4"):
        out = packed_run[member]
        for rec in Manifest(Storage(out), "pack").accepted():
            x, y, w, h = rec["crop"]
            if member == "npy":  # the near-lossless source-size clip split kept
                source = media.decode_frames(out / rec["video"])[:, y : y + h, x : x + w]
            else:  # the clip's frames in the source: the same seek and 24 fps resampling split uses
                source = media.decode_frames(out.parent / "in" / rec["source"], fps=24, start_s=rec["start_s"])
                source = source[: rec["num_frames"], y : y + h, x : x + w]
            want = resize_frames(source, rec["height"], rec["width"])
            if member == "npy":
                assert np.array_equal(np.load(out / rec["packed_video"]), want)
            else:
                got = media.decode_frames(out / rec["packed_video"])
                assert got.shape == want.shape and np.abs(got @ LUMA - want @ LUMA).mean() < 4.0  # of 255


def test_read_index_rejects_a_foreign_index(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"shards": [{"name": "a.tar", "num_samples": 1}]}))
    with pytest.raises(ValueError, match="write_index"):
        read_index(tmp_path)
    with pytest.raises(FileNotFoundError, match="index.json"):
        read_index(tmp_path / "missing")


def test_packed_mp4_carries_the_whole_audio_track(packed_run):
    """Regression: an output frame limit used to end the muxed AAC track at 3.2 s of the clip's 5.04 s."""
    out = packed_run["mp4"]
    for s in read_samples(out / "shards"):
        meta = json.loads(s["json"])
        member = out / f"{s['__key__']}.check.mp4"
        member.write_bytes(s["mp4"])
        frames, audio_s = media.stream_lengths(member)
        assert frames == 121 and audio_s == pytest.approx(121 / 24, abs=0.03), (s["__key__"], audio_s)
        heard = media.decode_audio(member, 16_000)
        assert abs(len(heard) - meta["num_samples"]) < 0.03 * 16_000
        if s["__key__"].startswith("boxed"):  # a tone from start to end: the last half second is not silence
            assert media.mean_volume_db(heard[-8000:]) > -30
