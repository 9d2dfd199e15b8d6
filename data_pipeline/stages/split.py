"""Split: find the cuts (PySceneDetect) and cut each scene into back-to-back clips of exactly 121 frames at
24 fps with 16 kHz mono audio of the same length. A clip never straddles a cut.

Scene detection runs on the same 24 fps resampled timeline the clips are cut from (ffmpeg's fps filter), so
variable- and other-frame-rate sources are handled alike and frame k of the analysis is at k / 24 s. Each clip
keeps ``cut_margin_frames`` clear of a cut because the resampler may pick a source frame half a frame away.

Outputs per clip: ``clips/{id}.mp4`` (video only) and ``clips/{id}.wav``. By default the video is already
the packed picture (black margins cropped, resized by ``ovi.imaging``, encoded once with pack's settings) so
pack only muxes the audio in; with ``split.final_size=false`` (and for npy members) it is a near-lossless
source-size intermediate that pack crops, resizes and encodes.
Reasons: ``no_full_clip`` (every scene shorter than a clip), ``truncated`` (no clip, and far fewer frames
decode than the container's duration promises), ``incomplete_clip`` (the file ends early: fewer
frames decode than the container promised), ``incomplete_audio``.
"""
from __future__ import annotations

import itertools

import numpy as np
from scenedetect.detectors import ContentDetector

from data_pipeline.manifest import Record, ok, reject
from data_pipeline.media import (decode_frames, encode_frames, fit_length, iter_frames, read_wav, run_ffmpeg,
                                 stored_frame_count)
from data_pipeline.stages.base import Stage
from data_pipeline.stages.filter import evenly_spaced
from data_pipeline.stages.pack import CROP_SAMPLE_FRAMES, black_margin_crop, crop_and_resize
from ovi.imaging import size_for_area
from ovi.media import write_wav

# A clip's audio may come up this much short (codec frame granularity) before it counts as truncated.
AUDIO_SHORTFALL_TOLERANCE_S = 0.1
# A source whose decodable frames fall below this share of its container duration is truncated, not short.
TRUNCATED_SHARE = 0.9


def detect_cuts(path, fps: int, width: int, threshold: float, min_scene_frames: int) -> tuple[list[int], int]:
    """Frame indices (on the ``fps`` timeline) where a new scene starts, and the number of decodable frames."""
    detector = ContentDetector(threshold=threshold, min_scene_len=min_scene_frames)
    cuts: list[int] = []
    n = 0
    for n, frame in enumerate(iter_frames(path, fps=fps, width=width, bgr=True), start=1):
        cuts += detector.process_frame(n - 1, np.ascontiguousarray(frame))
    if n:
        cuts += detector.post_process(n - 1)
    return sorted(c for c in set(cuts) if 0 < c < n), n


def clip_windows(cuts: list[int], total: int, clip_frames: int, margin: int, max_per_scene: int
                 ) -> list[tuple[int, int, int]]:
    """(scene index, clip index in scene, start frame) of every clip that fits inside a scene's margins."""
    bounds = [0, *cuts, total]
    windows = []
    for scene, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        # The file's own start and end are not cuts: no margin needed there.
        start = lo + (margin if lo > 0 else 0)
        end = hi - (margin if hi < total else 0)
        k = 0
        while start + clip_frames <= end and (max_per_scene <= 0 or k < max_per_scene):
            windows.append((scene, k, start))
            start += clip_frames
            k += 1
    return windows


class SplitStage(Stage):
    name = "split"

    def process(self, record: Record) -> list[Record]:
        cfg = self.cfg.split
        with self.source(record) as path:
            cuts, total = detect_cuts(path, cfg.fps, cfg.analysis_width, cfg.scene_threshold, cfg.min_scene_frames)
            windows = clip_windows(cuts, total, cfg.num_frames, cfg.cut_margin_frames, cfg.max_clips_per_scene)
            if not windows:
                promised = round(float(record.get("duration_s") or 0.0) * cfg.fps)
                if total < promised * TRUNCATED_SHARE:
                    return [reject(record, "truncated", f"{total} of {promised} frames at {cfg.fps} fps decodable")]
                return [reject(record, "no_full_clip", f"{len(cuts) + 1} scenes, {total} frames at {cfg.fps} fps")]
            base = {k: record[k] for k in ("source", "width", "height")}
            base["source_id"] = record["id"]
            base["num_scenes"] = len(cuts) + 1
            return [self._cut(path, base, record["has_audio"], *w) for w in windows]

    def _cut(self, path, base: Record, has_audio: bool, scene: int, k: int, start_frame: int) -> Record:
        cfg = self.cfg.split
        clip_id = f"{base['source_id']}_{scene:04d}_{k:03d}"
        video_rel, audio_rel = f"clips/{clip_id}.mp4", f"clips/{clip_id}.wav"
        start_s, dur_s = start_frame / cfg.fps, cfg.num_frames / cfg.fps
        num_samples = round(dur_s * cfg.sample_rate)
        record = {**base, "id": clip_id, "scene_index": scene, "clip_index": k, "start_s": round(start_s, 6),
                  "end_s": round(start_s + dur_s, 6), "num_frames": cfg.num_frames, "fps": cfg.fps,
                  "sample_rate": cfg.sample_rate, "num_samples": num_samples, "video": video_rel,
                  "audio": audio_rel}
        try:
            with self.staged(video_rel) as tmp_video, self.staged(audio_rel) as tmp_audio:
                if self.cfg.encode_once:
                    record.update(self._encode_final(path, start_s, tmp_video, base))
                    self._encode(path, start_s, dur_s, has_audio, None, tmp_audio, num_samples)
                else:
                    self._encode(path, start_s, dur_s, has_audio, tmp_video, tmp_audio, num_samples)
        except _Reject as r:  # the staged files are dropped
            return reject(record, r.reason, r.detail, video=None, audio=None)
        return ok(record)

    def _encode_final(self, path, start_s: float, tmp_video, base: Record) -> dict:
        """The clip's frames, black margins cropped and resized to the packed size by ``ovi.imaging``, encoded
        once with pack's settings; returns the geometry fields pack would have added."""
        cfg, pcfg = self.cfg.split, self.cfg.pack
        dur_s = cfg.num_frames / cfg.fps
        # The same frames the full decode below gives (same seek, same fps resampling), 8 of them.
        sample = decode_frames(path, vf=f"trim=end={dur_s:.6f}", fps=cfg.fps, start_s=start_s,
                               select=evenly_spaced(cfg.num_frames, CROP_SAMPLE_FRAMES))
        if len(sample) == 0:
            raise _Reject("incomplete_clip", "no frame decodes in the clip's window")
        crop = black_margin_crop(sample, pcfg.black_threshold)
        H, W = size_for_area(crop[2], crop[3], pcfg.target_area_side**2, pcfg.side_multiple)
        frames = crop_and_resize(itertools.islice(iter_frames(path, fps=cfg.fps, start_s=start_s), cfg.num_frames),
                                 crop, H, W)
        encode_frames(frames, tmp_video, cfg.fps, ["-vf", "setsar=1", "-c:v", "libx264", "-crf", str(pcfg.crf),
                                                   "-preset", pcfg.preset, "-pix_fmt", "yuv420p"])
        count = stored_frame_count(tmp_video)
        if count < cfg.num_frames:
            raise _Reject("incomplete_clip", f"{count} of {cfg.num_frames} frames decodable")
        return {"crop": list(crop), "source_width": base["width"], "source_height": base["height"], "width": W,
                "height": H, "final_size": True}

    def _encode(self, path, start_s: float, dur_s: float, has_audio: bool, tmp_video, tmp_audio,
                num_samples: int) -> None:
        cfg = self.cfg.split
        # One ffmpeg run cuts both streams from the same seek point, as a player would align them. Even sides
        # (crop at most one pixel): yuv420p h264 cannot store odd ones (1281x721 sources).
        args = ["-y", "-ss", f"{start_s:.6f}", "-i", str(path)]
        if tmp_video is not None:
            args += ["-map", "0:v:0", "-vf", f"fps={cfg.fps},crop=trunc(iw/2)*2:trunc(ih/2)*2",
                     "-frames:v", str(cfg.num_frames), "-an",
                     "-c:v", "libx264", "-crf", str(cfg.crf), "-preset", cfg.preset, "-pix_fmt", "yuv420p",
                     str(tmp_video)]
        raw_audio = tmp_audio.with_name(tmp_audio.stem + ".raw.wav")
        if has_audio:
            # first_pts=0 pads with silence when the audio stream starts after the video (a late first
            # packet): a wav has no timestamps, so without it the clip's audio would start early.
            args += ["-map", "0:a:0", "-vn", "-af", "aresample=async=1:first_pts=0", "-t", f"{dur_s:.6f}",
                     "-ac", "1", "-ar", str(cfg.sample_rate), "-c:a", "pcm_s16le", str(raw_audio)]
        try:
            if tmp_video is not None or has_audio:
                run_ffmpeg(args)
            if tmp_video is not None:
                frames = stored_frame_count(tmp_video)
                if frames < cfg.num_frames:
                    raise _Reject("incomplete_clip", f"{frames} of {cfg.num_frames} frames decodable")
            wav = read_wav(raw_audio)[0] if has_audio else np.zeros(0, np.float32)
        finally:
            raw_audio.unlink(missing_ok=True)
        shortfall_s = (num_samples - len(wav)) / cfg.sample_rate
        if has_audio and shortfall_s > AUDIO_SHORTFALL_TOLERANCE_S:
            raise _Reject("incomplete_audio", f"audio {shortfall_s:.3f} s short")
        write_wav(tmp_audio, fit_length(wav, num_samples), cfg.sample_rate)


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail
