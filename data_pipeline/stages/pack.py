"""Pack: make each clip training-ready, then write the webdataset shards and their index.

Per clip (parallel): crop black margins (rows/columns dark in every sampled frame), resize keeping the aspect
ratio to the pixel area of ``target_area_side``^2 with both sides multiples of ``side_multiple`` (rounded
down, so a square source gives 704x704 like the released model) with ``ovi.imaging`` (the same size rule and
resize as generation's first frame and training), then h264 at the clip's 24 fps (+ AAC when ``mux_audio``).
Then ``write_shards`` (after every clip is through): clips not yet in a shard, sorted by id, go into new
shards of ``samples_per_shard`` / ``max_shard_bytes`` written in parallel by the engine's workers;
``shards/index.json`` is rewritten last. Audio-only records need no per-clip work.
"""
from __future__ import annotations

import itertools
import json
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from data_pipeline.config import DataPipelineConfig
from data_pipeline.manifest import Manifest, Record, dumps, ok, reject
from data_pipeline.media import decode_frames, encode_frames, iter_frames, run_ffmpeg, stream_lengths
from data_pipeline.shards import (INDEX_NAME, Member, Sample, ShardLedger, ShardPlan, StoredFile, index_document,
                                  index_text, plan_shards, write_shard_to)
from data_pipeline.stages.base import INTERMEDIATE_FIELDS, Stage
from data_pipeline.storage import Storage
from data_pipeline.stages.filter import evenly_spaced
from ovi.imaging import RESIZE_CHUNK, resize_frames, size_for_area

SHARD_DIR = "shards"
PLAN_NAME = "pending-plan.json"  # the shards a run is writing; deleted once they are all written
AAC_SLACK_S = 0.03  # the muxed AAC track may end up to about one AAC frame short of the clip
CROP_SAMPLE_FRAMES = 8
MIN_CROP_KEEP = 0.25  # never crop away more than this share of a side: the "margin" would be the picture
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# final_size is bookkeeping between split and pack, not sample metadata.
META_FIELDS_AV = ("caption", "num_frames", "fps", "width", "height", "sample_rate", "num_samples", "source",
                  "start_s", "end_s", "scores", "face_count", "face_category", "crop", "source_width",
                  "source_height", "scene_index")
META_FIELDS_AUDIO = ("caption", "sample_rate", "num_samples", "duration_s", "source", "start_s", "end_s", "scores")


def black_margin_crop(frames: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the picture inside black bars: a row/column is a bar when its mean luma stays at or
    below ``threshold`` in every sampled frame. Sides stay even (yuv420)."""
    luma = frames.astype(np.float32) @ LUMA  # [N, H, W]
    rows = np.flatnonzero(luma.mean(axis=2).max(axis=0) > threshold)
    cols = np.flatnonzero(luma.mean(axis=1).max(axis=0) > threshold)
    h, w = luma.shape[1:]
    if rows.size == 0 or cols.size == 0:
        return 0, 0, w, h  # an all-black clip: nothing sensible to crop to
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if (y1 - y0) < MIN_CROP_KEEP * h:
        y0, y1 = 0, h
    if (x1 - x0) < MIN_CROP_KEEP * w:
        x0, x1 = 0, w
    x0, y0 = x0 + (x0 % 2), y0 + (y0 % 2)
    cw, ch = (x1 - x0) // 2 * 2, (y1 - y0) // 2 * 2
    return int(x0), int(y0), int(cw), int(ch)


def crop_and_resize(frames: Iterable[np.ndarray], crop: tuple[int, int, int, int], height: int, width: int,
                    ) -> Iterator[np.ndarray]:
    """Frames [h, w, 3] -> the picture inside ``crop`` (x, y, w, h) resized to cover (height, width) and
    centre-cropped by ``ovi.imaging`` (the resize generation and training use), in chunks of frames."""
    x, y, cw, ch = crop
    for chunk in _chunks(frames, RESIZE_CHUNK):
        yield from resize_frames(np.stack([f[y : y + ch, x : x + cw] for f in chunk]), height, width)


def _chunks(items: Iterable[np.ndarray], n: int) -> Iterator[list[np.ndarray]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


class PackStage(Stage):
    name = "pack"

    def process(self, record: Record) -> list[Record]:
        if self.cfg.mode != "video":
            return [ok(record)]
        cfg = self.cfg.pack
        rel = f"packed/{record['id']}.{cfg.video_member}"
        if record.get("final_size"):
            return [self._mux(record, rel)]
        with self.local(record["video"]) as video, self.local(record["audio"]) as audio, self.staged(rel) as tmp:
            sample = decode_frames(video, select=evenly_spaced(record["num_frames"], CROP_SAMPLE_FRAMES))
            crop = black_margin_crop(sample, cfg.black_threshold)
            H, W = size_for_area(crop[2], crop[3], cfg.target_area_side**2, cfg.side_multiple)
            fields = {"crop": list(crop), "source_width": record["width"], "source_height": record["height"],
                      "width": W, "height": H}
            frames = crop_and_resize(itertools.islice(iter_frames(video), record["num_frames"]), crop, H, W)
            audio_s = None
            if cfg.video_member == "npy":
                packed = np.stack(list(frames))
                np.save(tmp, packed)
                count = len(packed)
            else:
                args: list[str] = []
                audio_out: list[str] = []
                if cfg.mux_audio:
                    args += ["-i", str(audio)]
                    audio_out = ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
                # No -frames:v / -shortest: the video input ends by itself after num_frames, and an output
                # frame limit would also end the audio early.
                args += ["-map", "0:v:0", "-vf", "setsar=1", "-c:v", "libx264", "-crf", str(cfg.crf),
                         "-preset", cfg.preset, "-pix_fmt", "yuv420p", *audio_out, "-movflags", "+faststart"]
                encode_frames(frames, tmp, record["fps"], args)
                count, audio_s = stream_lengths(tmp)
        return [self._checked(record, rel, count, audio_s, fields)]

    def _mux(self, record: Record, rel: str) -> Record:
        """Split already encoded the packed picture: copy the video stream, add the audio as AAC."""
        cfg = self.cfg.pack
        with self.local(record["video"]) as video, self.local(record["audio"]) as audio, self.staged(rel) as tmp:
            audio_args = ["-i", str(audio), "-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"] if cfg.mux_audio else []
            run_ffmpeg(["-y", "-i", str(video), *audio_args[:2], "-map", "0:v:0", *audio_args[2:], "-c:v", "copy",
                        "-movflags", "+faststart", str(tmp)])
            count, audio_s = stream_lengths(tmp)
        return self._checked(record, rel, count, audio_s, {})

    def _checked(self, record: Record, rel: str, count: int, audio_s, fields: dict) -> Record:
        cfg = self.cfg.pack
        if count != record["num_frames"]:
            return reject(record, "pack_frame_count", f"{count} frames packed, {record['num_frames']} expected",
                          packed_video=rel)
        want_s = record["num_samples"] / record["sample_rate"]
        if cfg.video_member == "mp4" and cfg.mux_audio and not (audio_s and audio_s >= want_s - AAC_SLACK_S):
            return reject(record, "pack_audio_length", f"muxed audio {audio_s} s, clip {want_s:.3f} s",
                          packed_video=rel)
        return ok(record, packed_video=rel, **fields)


def clip_sample(cfg: DataPipelineConfig, storage: Storage, record: Record) -> Sample:
    """The shard sample of an accepted pack record; members are read from the run's storage at write time."""
    video_mode = cfg.mode == "video"
    meta = {k: record[k] for k in (META_FIELDS_AV if video_mode else META_FIELDS_AUDIO) if k in record}
    meta["id"] = record["id"]
    members: dict[str, Member] = {"wav": StoredFile(storage, record["audio"])}
    if video_mode:
        members[cfg.pack.video_member] = StoredFile(storage, record["packed_video"])
    return Sample(key=record["id"], members=members, meta=meta)


def _write_plan(job: tuple[Storage, ShardPlan, list[str]]) -> dict:
    """Write one shard and its ledger entry, then delete the files that went into it (a worker task)."""
    storage, plan, discard = job
    entry = write_shard_to(storage, SHARD_DIR, plan)
    for rel in discard:
        storage.delete(rel)
    return entry


def write_shards(cfg: DataPipelineConfig, parallel_map: Callable) -> dict:
    """Shard every accepted clip that is in no shard yet, in new shards written in parallel by the engine's
    workers, then rewrite ``shards/index.json`` atomically. The plan is saved before any shard is written so
    that a run killed half-way writes the same shards, under the same names, when resumed."""
    storage = Storage(cfg.output)
    pcfg = cfg.pack
    records = {r["id"]: r for r in Manifest(storage, "pack").accepted()}
    ledger = ShardLedger(storage, SHARD_DIR)
    plan_rel = f"{SHARD_DIR}/{PLAN_NAME}"
    if storage.exists(plan_rel):  # an interrupted run's plan: finish it as planned
        planned = json.loads(storage.read_bytes(plan_rel))
    else:
        assigned = ledger.assigned()
        new = [clip_sample(cfg, storage, records[k]) for k in sorted(records) if k not in assigned]
        plans = plan_shards(new, pcfg.shard_prefix, pcfg.samples_per_shard, pcfg.max_shard_bytes,
                            ledger.next_number(pcfg.shard_prefix))
        planned = [{"name": p.name, "keys": [s.key for s in p.samples]} for p in plans]
        storage.write_bytes(plan_rel, (dumps(planned) + "\n").encode())
    jobs = []
    for p in planned:
        if p["name"] in ledger.entries:
            continue
        plan = ShardPlan(p["name"], [clip_sample(cfg, storage, records[k]) for k in p["keys"]])
        discard = [] if cfg.keep_intermediates else [
            records[k][f] for k in p["keys"] for f in INTERMEDIATE_FIELDS if records[k].get(f)]
        jobs.append((storage, plan, discard))
    for entry in tqdm(parallel_map(cfg, _write_plan, jobs), desc="pack: shards", unit="shard", disable=not jobs):
        ledger.entries[entry["name"]] = entry
    index = index_document(ledger.index_entries(), "audio_video" if cfg.mode == "video" else "audio")
    if index["shards"]:
        storage.write_bytes(f"{SHARD_DIR}/{INDEX_NAME}", index_text(index).encode())
    storage.delete(plan_rel)
    return {"shards": index["num_shards"], "samples": index["num_samples"], "shards_written": len(jobs)}
