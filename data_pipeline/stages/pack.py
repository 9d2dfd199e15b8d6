"""Pack: make each clip training-ready, then write the webdataset shards and their index.

Per clip (parallel): crop black margins (rows/columns dark in every sampled frame), resize keeping the aspect
ratio to the pixel area of ``target_area_side``^2 with both sides multiples of ``side_multiple`` (rounded
down, so a square source gives 704x704 like the released model), 24 fps, h264 (+ AAC when ``mux_audio``).
Then, in the driver (``finalize``): samples sorted by id go into shards of ``samples_per_shard`` /
``max_shard_bytes``; ``shards/index.json`` is written last. Audio-only records need no per-clip work.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_pipeline.manifest import Record, ok, reject
from data_pipeline.media import decode_frames, run_ffmpeg, stored_frame_count, tmp_path_for
from data_pipeline.shards import Sample, ShardState, plan_shards, write_index, write_shard
from data_pipeline.stages.base import Stage
from data_pipeline.stages.filter import evenly_spaced

CROP_SAMPLE_FRAMES = 8
MIN_CROP_KEEP = 0.25  # never crop away more than this share of a side: the "margin" would be the picture
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
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


def target_size(width: int, height: int, area_side: int, multiple: int) -> tuple[int, int]:
    """(W, H) with W/H ~ width/height, W*H ~ area_side^2, both multiples of ``multiple`` (rounded down)."""
    aspect = width / height
    h = math.sqrt(area_side * area_side / aspect)
    w = h * aspect
    return max(multiple, int(w // multiple) * multiple), max(multiple, int(h // multiple) * multiple)


class PackStage(Stage):
    name = "pack"

    def process(self, record: Record) -> list[Record]:
        if self.cfg.mode != "video":
            return [ok(record)]
        cfg = self.cfg.pack
        video = self.out_path(record["video"])
        sample = decode_frames(video, select=evenly_spaced(record["num_frames"], CROP_SAMPLE_FRAMES))
        x, y, cw, ch = black_margin_crop(sample, cfg.black_threshold)
        W, H = target_size(cw, ch, cfg.target_area_side, cfg.side_multiple)
        vf = (f"crop={cw}:{ch}:{x}:{y},scale={W}:{H}:force_original_aspect_ratio=increase:flags=lanczos,"
              f"crop={W}:{H},setsar=1")
        fields = {"crop": [x, y, cw, ch], "source_width": record["width"], "source_height": record["height"],
                  "width": W, "height": H}
        if cfg.video_member == "npy":
            rel = f"packed/{record['id']}.npy"
            frames = decode_frames(video, vf=vf)
            out = self.out_path(rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = tmp_path_for(out)
            np.save(tmp, frames)
            tmp.replace(out)
            count = len(frames)
        else:
            rel = f"packed/{record['id']}.mp4"
            out = self.out_path(rel)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = tmp_path_for(out)
            args = ["-y", "-i", str(video)]
            audio_out: list[str] = []
            if cfg.mux_audio:
                args += ["-i", str(self.out_path(record["audio"]))]
                audio_out = ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
            args += ["-map", "0:v:0", "-vf", vf, "-frames:v", str(record["num_frames"]), "-c:v", "libx264",
                     "-crf", str(cfg.crf), "-preset", cfg.preset, "-pix_fmt", "yuv420p", *audio_out,
                     "-movflags", "+faststart", str(tmp)]
            try:
                run_ffmpeg(args)
                count = stored_frame_count(tmp)
                tmp.replace(out)
            finally:
                tmp.unlink(missing_ok=True)
        if count != record["num_frames"]:
            return [reject(record, "pack_frame_count", f"{count} frames packed, {record['num_frames']} expected")]
        return [ok(record, packed_video=rel, **fields)]

    def finalize(self, accepted: list[Record]) -> dict:
        cfg = self.cfg.pack
        video_mode = self.cfg.mode == "video"
        fields = META_FIELDS_AV if video_mode else META_FIELDS_AUDIO
        samples = []
        for r in sorted(accepted, key=lambda r: r["id"]):
            meta = {k: r[k] for k in fields if k in r}
            meta["id"] = r["id"]
            members: dict[str, bytes | Path] = {"wav": self.out_path(r["audio"])}
            if video_mode:
                members[cfg.video_member] = self.out_path(r["packed_video"])
            samples.append(Sample(key=r["id"], members=members, meta=meta))
        shard_dir = self.output / "shards"
        shard_dir.mkdir(parents=True, exist_ok=True)
        state = ShardState(self.output / "manifests" / "pack_shards.jsonl")
        plans = plan_shards(samples, cfg.shard_prefix, cfg.samples_per_shard, cfg.max_shard_bytes)
        entries, written = [], 0
        for plan in tqdm(plans, desc="pack: shards", unit="shard", disable=not plans):
            digest = plan.digest()
            if not state.is_current(shard_dir, plan, digest):
                size = write_shard(shard_dir / plan.name, plan)
                state.record({"name": plan.name, "digest": digest, "num_samples": len(plan.samples),
                              "num_bytes": size})
                written += 1
            entry = state.entries[plan.name]
            entries.append({"name": plan.name, "num_samples": entry["num_samples"], "num_bytes": entry["num_bytes"]})
        planned = {p.name for p in plans}
        for stale in shard_dir.glob(f"{cfg.shard_prefix}-*.tar"):
            if stale.name not in planned:  # left by an earlier run over more clips
                stale.unlink()
        index = write_index(shard_dir, entries, "audio_video" if video_mode else "audio")
        return {"shards": index["num_shards"], "samples": index["num_samples"], "shards_written": written}
