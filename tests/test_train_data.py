"""Training data: shard reading, deterministic per-rank resampling and its resumable position, length
buckets, decoding real mp4/wav members, and precomputed latents agreeing with on-the-fly encoding."""
from __future__ import annotations

import itertools
import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from data_pipeline.shards import Sample as ShardSample
from data_pipeline.shards import iter_tar_samples, read_index, write_shard
from ovi.geometry import TEN_SECOND, audio_latents_for_samples
from ovi.imaging import frames_to_pixels
from train.config import load_train_config
from train.data.latents import load_null_prompt, unpack_latents
from train.data.loader import BatchStream, TooManyBadSamples, decode_raw
from train.data.media import AudioSpec, decode_audio
from train.data.stream import RawSample, ShardStream
from train.encoders import RandomAudioEncoder, RandomTextEncoder, RandomVideoEncoder
from train.precompute import main as precompute_main
from train.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[1]
VARIABLE_SECONDS = [2.0, 3.5, 13.0, 0.5, 1.2, 6.0, 4.0]  # 13 s is cropped / chunked, 0.5 s is skipped
TINY_AV = ["data.video.height=64", "data.video.width=64", "data.video.num_frames=9"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_data")
    av = write_dataset(root / "av", 5, 2, video=True)
    audio = write_dataset(root / "audio", len(VARIABLE_SECONDS), 3, video=False, seconds=VARIABLE_SECONDS)
    common = ["--store-dtype", "fp32", "encoders.kind=random"]
    precompute_main(["--config", str(REPO / "configs/train/fusion.yaml"), "--input", str(av),
                     "--out", str(root / "av_lat"), *common, *TINY_AV])
    precompute_main(["--config", str(REPO / "configs/train/audio_pretrain.yaml"), "--input", str(audio),
                     "--out", str(root / "audio_lat"), *common])
    return {"av": av, "audio": audio, "av_lat": root / "av_lat", "audio_lat": root / "audio_lat"}


def config(stage: str, shards: Path, *overrides: str):
    return load_train_config(REPO / f"configs/train/{stage}.yaml", [f"data.shards=[{shards}]", *overrides])


def test_written_shards_follow_the_data_pipeline_format(datasets) -> None:
    index = json.loads((datasets["av"] / "shards/index.json").read_text())
    assert [s["num_samples"] for s in index["shards"]] == [2, 2, 1]
    key, files = next(iter_tar_samples(datasets["av"] / "shards" / index["shards"][0]["name"]))
    assert key == "clip_000000" and set(files) == {"mp4", "wav", "json"}
    meta = json.loads(files["json"])
    assert "<S>" in meta["caption"] and "Audio:" in meta["caption"] and meta["num_frames"] == 9


def test_tar_skip_equals_slicing(datasets) -> None:
    path = read_index(datasets["audio"]).shards[0].path
    full = [k for k, _ in iter_tar_samples(path)]
    assert len(full) == 3
    for skip in range(4):
        assert [k for k, _ in iter_tar_samples(path, skip=skip)] == full[skip:]


def keys(stream: ShardStream, n: int) -> list[str]:
    return [s.key for s in itertools.islice(iter(stream), n)]


def test_stream_is_deterministic_per_rank_and_never_runs_dry(datasets) -> None:
    shards = [read_index(datasets["audio"])]  # 3 shards of 3, 3, 1 samples: uneven across 2 ranks
    a = keys(ShardStream(shards, None, seed=5, rank=0, interleave=2), 100)
    assert a == keys(ShardStream(shards, None, seed=5, rank=0, interleave=2), 100)
    assert a != keys(ShardStream(shards, None, seed=5, rank=1, interleave=2), 100)
    assert a != keys(ShardStream(shards, None, seed=6, rank=0, interleave=2), 100)
    assert len(set(a)) == len(VARIABLE_SECONDS)  # every sample shows up


def test_stream_resumes_from_any_position(datasets) -> None:
    shards = [read_index(datasets["audio"]), read_index(datasets["av"])]
    full = list(itertools.islice(iter(ShardStream(shards, [1.0, 3.0], 1, 0, 3)), 30))
    for cut in (0, 1, 7, 18):
        state = full[cut].state_after
        rest = keys(ShardStream(shards, [1.0, 3.0], 1, 0, 3, state=json.loads(json.dumps(state))), 30 - cut - 1)
        assert rest == [s.key for s in full[cut + 1 :]]


def test_dataset_weights_mix_datasets(datasets) -> None:
    shards = [read_index(datasets["audio"]), read_index(datasets["av"])]
    n = 1000
    stream = iter(ShardStream(shards, [1.0, 9.0], 0, 0, 1))
    picked = [s.files.get("mp4") is not None for s in itertools.islice(stream, n)]
    # Shards are drawn with probability weight * (its samples / its dataset's samples): 2-sample video shards
    # against 3-sample audio shards put ~0.86 of the samples in the video set.
    assert 0.8 < sum(picked) / n < 0.92


def test_batch_stream_resume_and_buckets(datasets) -> None:
    cfg = config("audio_pretrain", datasets["audio_lat"], "data.batch_size=2", "data.bucket_batches=3")
    batches = list(itertools.islice(iter(BatchStream(cfg, rank=0)), 9))
    for b in batches:
        assert len(b.samples) == 2
    # Within a bucket of 6 samples the batches are cut from the length-sorted order: little padding.
    for j in range(0, 9, 3):
        bucket = batches[j : j + 3]
        ranges = sorted((min(s.tokens for s in b.samples), max(s.tokens for s in b.samples)) for b in bucket)
        assert all(ranges[i][1] <= ranges[i + 1][0] for i in range(2))
    for cut in (0, 1, 4, 5):  # inside a bucket and at its end
        state = json.loads(json.dumps(batches[cut].state))  # as stored in a checkpoint
        resumed = list(itertools.islice(iter(BatchStream(cfg, 0, state)), 9 - cut - 1))
        for b, r in zip(batches[cut + 1 :], resumed, strict=True):
            assert [s.key for s in b.samples] == [s.key for s in r.samples]
            for s, t in zip(b.samples, r.samples):
                assert torch.equal(s.audio, t.audio) and torch.equal(s.text, t.text)


def test_variable_audio_windows_and_skips(datasets) -> None:
    cfg = config("audio_pretrain", datasets["audio"], "data.source=raw", "data.bucket_batches=1")
    stream = ShardStream([read_index(datasets["audio"])], None, 0, 0, 1)
    seen = {}
    for raw in itertools.islice(iter(stream), 40):
        s = decode_raw(raw, cfg, rank=0)
        seen[raw.key] = None if s is None else s.audio.numel() / 16000
    by_len = dict(zip([f"clip_{i:06d}" for i in range(len(VARIABLE_SECONDS))], VARIABLE_SECONDS))
    for key, got in seen.items():
        want = by_len[key]
        if want < cfg.data.audio.min_seconds:
            assert got is None
        else:
            assert got == pytest.approx(min(want, cfg.data.audio.seconds), abs=1e-4)


def test_fixed_audio_and_video_decoding(datasets) -> None:
    cfg = config("fusion", datasets["av"], "data.source=raw", *TINY_AV, "data.video.height=32", "data.video.width=64")
    raw = next(iter(ShardStream([read_index(datasets["av"])], None, 0, 0, 1)))
    s = decode_raw(raw, cfg, rank=0)
    assert s.video.shape == (3, 9, 32, 64) and s.video.min() >= -1 and s.video.max() <= 1
    # The audio of the 9-frame clip geometry (11 latents), aligned with frame 0.
    assert s.audio.numel() == cfg.data.geometry.audio_samples == 11 * 512
    torch.testing.assert_close(s.audio, decode_audio(raw.files["wav"])[: s.audio.numel()], rtol=0, atol=0)
    assert s.tokens == audio_latents_for_samples(s.audio.numel()) + 3 * 1 * 2  # 3 latent frames of 1x2 patches


def test_pixels_cover_then_centre_crop() -> None:
    frames = torch.zeros(2, 40, 80, 3, dtype=torch.uint8)
    frames[:, :, 40:] = 255  # right half white
    x = frames_to_pixels(frames, 64, 64)  # scaled to 64x128, centre 64 columns straddle the edge
    assert x.shape == (3, 2, 64, 64)
    assert float(x[:, :, :, :16].mean()) == pytest.approx(-1.0) and float(x[:, :, :, -16:].mean()) == pytest.approx(1.0)


def test_audio_chunks() -> None:
    sr = 16000
    variable = AudioSpec(length=12 * sr, least=sr, fixed=False)
    assert variable.chunks(13 * sr) == [(0, 12 * sr), (12 * sr, sr)]
    assert variable.chunks(sr // 2) == []
    fixed = AudioSpec.for_config(config("audio_finetune", Path("unused"), "data.audio.pad_short=false"))
    assert fixed.length == 157 * 512 == 80_384  # 121 frames -> 157 latents
    assert fixed.chunks(int(11.5 * sr)) == [(0, 80_384), (80_384, 80_384)]
    padded = AudioSpec.for_config(config("audio_finetune", Path("unused")))  # the shipped config pads short tails
    assert padded.chunks(int(11.5 * sr)) == [(0, 80_384), (80_384, 80_384), (160_768, 23_232)]
    assert padded.chunks(sr // 2) == []  # under min_seconds: still skipped


def test_fixed_audio_is_the_geometry_length_padded_when_a_few_samples_short() -> None:
    # A 241-frame (10 s) clip has 160,667 samples; the 10 s model's 314 latents need 160,768.
    spec = AudioSpec.for_config(config("audio_finetune", Path("unused"), "data.video.num_frames=241",
                                       "data.audio.pad_short=false"))
    wave = torch.rand(160_667) * 2 - 1
    start, length = spec.window(wave.numel(), random.Random(0))
    clip = spec.take(wave, start, length)
    assert (start, clip.numel()) == (0, 160_768) and audio_latents_for_samples(clip.numel()) == 314
    assert torch.equal(clip[:160_667], wave) and not clip[160_667:].any()
    assert spec.window(160_768 - 512, random.Random(0)) is None  # a whole latent short: skipped


def test_ten_second_clip_gives_314_audio_latents(tmp_path) -> None:
    frames = TEN_SECOND.num_frames
    data = write_dataset(tmp_path / "ten", 1, 1, video=True, num_frames=frames, seconds=frames / 24)
    cfg = config("fusion", data, "data.source=raw", f"data.video.num_frames={frames}")
    raw = next(iter(ShardStream([read_index(data)], None, 0, 0, 1)))
    assert decode_audio(raw.files["wav"]).numel() == 160_667
    s = decode_raw(raw, cfg, rank=0)
    assert s.video.shape[1] == frames and s.audio.numel() == TEN_SECOND.audio_samples
    assert RandomAudioEncoder(0).encode(s.audio[None]).shape[-1] == TEN_SECOND.audio_latents == 314


def test_precompute_matches_on_the_fly_encoding(datasets) -> None:
    lat = datasets["av_lat"]
    assert read_index(lat).num_samples == 5
    cfg = config("fusion", datasets["av"], "data.source=raw", *TINY_AV)
    text, video, audio = RandomTextEncoder(0), RandomVideoEncoder(0), RandomAudioEncoder(0)
    stored = {k: unpack_latents(f) for sh in read_index(lat).shards for k, f in iter_tar_samples(sh.path)}
    for i, (key, files) in enumerate(iter_tar_samples(read_index(datasets["av"]).shards[0].path)):
        s = decode_raw(RawSample(key, files, i, "shard.tar", {}), cfg, rank=0)
        ref = stored[key]
        assert ref.video.shape == (48, 3, 4, 4) and ref.audio.shape == (cfg.data.geometry.audio_latents, 20)
        torch.testing.assert_close(ref.video, video.encode(s.video[None])[0])
        torch.testing.assert_close(ref.audio, audio.encode(s.audio[None])[0].T)
        torch.testing.assert_close(ref.text, text.encode([s.caption])[0])
    null = load_null_prompt(lat, "")
    torch.testing.assert_close(null, text.encode([""])[0])
    with pytest.raises(ValueError, match="null_prompt"):
        load_null_prompt(lat, "a different null prompt")


def test_precompute_chunks_audio_and_resumes(datasets) -> None:
    lat = datasets["audio_lat"]
    lengths = sorted(unpack_latents(f).audio.shape[0]
                     for sh in read_index(lat).shards for _, f in iter_tar_samples(sh.path))
    # 2.0, 3.5, 12+1.0 (13 s chunked), 1.2, 6.0, 4.0 seconds; 0.5 s dropped
    expected = sorted(audio_latents_for_samples(round(s * 16000)) for s in [2.0, 3.5, 12.0, 1.0, 1.2, 6.0, 4.0])
    assert lengths == expected
    before = {p.name: p.stat().st_mtime_ns for p in (lat / "shards").glob("*.tar")}
    precompute_main(["--config", str(REPO / "configs/train/audio_pretrain.yaml"), "--input", str(datasets["audio"]),
                     "--out", str(lat), "--store-dtype", "fp32", "encoders.kind=random"])
    assert {p.name: p.stat().st_mtime_ns for p in (lat / "shards").glob("*.tar")} == before  # nothing redone


def test_corrupt_samples_and_unreadable_shards_are_skipped_logged_and_counted(datasets, tmp_path: Path,
                                                                               caplog) -> None:
    data = tmp_path / "lat"
    shutil.copytree(datasets["audio_lat"], data)
    shards = read_index(data).shards
    assert len(shards) >= 3
    # Shard 0: its first sample's latents are garbage (the tar itself is fine). Shard 1: cut inside a header.
    samples = list(iter_tar_samples(shards[0].path))
    bad_key = samples[0][0]
    rewritten = [ShardSample(k, {e: (b"not safetensors" if k == bad_key and e != "json" else v)
                                 for e, v in f.items() if e != "json"}, json.loads(f["json"])) for k, f in samples]
    write_shard(shards[0].path, rewritten)
    shards[1].path.write_bytes(shards[1].path.read_bytes()[:300])
    over = ["data.batch_size=1", "data.bucket_batches=2", "data.interleave=1", "data.decode_workers=0"]
    cfg = config("audio_pretrain", data, *over)
    with caplog.at_level("WARNING"):
        stream = BatchStream(cfg, rank=0)
        batches = list(itertools.islice(iter(stream), 40))
    seen = {s.key for b in batches for s in b.samples}
    assert bad_key not in seen and len(seen) >= 2
    assert stream.bad_samples >= 1 and stream.bad_shards == 1
    assert f"skipping corrupt sample {bad_key} in {shards[0].path}" in caplog.text
    assert f"{bad_key}.latents.safetensors" in caplog.text and f"skipping shard {shards[1].path}" in caplog.text
    # The counts are part of the data position: a resumed stream continues them and the batches.
    cut = 25
    resumed = BatchStream(cfg, rank=0, state=batches[cut - 1].state)
    rest = list(itertools.islice(iter(resumed), len(batches) - cut))
    assert [[s.key for s in b.samples] for b in rest] == [[s.key for s in b.samples] for b in batches[cut:]]
    assert (resumed.bad_samples, resumed.bad_shards) == (stream.bad_samples, stream.bad_shards)
    # Past the ceiling the run stops with a message naming the key.
    with pytest.raises(TooManyBadSamples, match="data.max_bad_samples=1"):
        list(itertools.islice(iter(BatchStream(config("audio_pretrain", data, *over, "data.max_bad_samples=1"), 0)),
                              40))
