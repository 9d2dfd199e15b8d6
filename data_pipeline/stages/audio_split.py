"""Audio split (stage-1, audio-only data): cut a file's audio track into clips for the audio tower.

``purpose=pretrain``: clips of ``min_s``..``max_s`` (12 s), each ending at the quietest short window of its
allowed range (the latest of equally quiet ones, so clips run long) so words are rarely cut; a tail shorter
than ``min_s`` is dropped. ``purpose=finetune``: back-to-back clips of exactly ``finetune_s`` (5.04 s).
Output: ``audio/{id}.wav`` (16 kHz mono PCM16). Reason: ``too_short`` (no clip fits).
"""
from __future__ import annotations

import numpy as np

from data_pipeline.config import AudioSplitConfig
from data_pipeline.manifest import Record, ok, reject
from data_pipeline.media import decode_audio
from ovi.media import write_wav
from data_pipeline.stages.base import Stage

QUIET_TOLERANCE = 0.01  # windows within 1% of the energy range above the quietest count as equally quiet


def quiet_cut_segments(audio: np.ndarray, cfg: AudioSplitConfig) -> list[tuple[int, int]]:
    """(start, end) sample ranges for ``purpose=pretrain``."""
    rate = cfg.sample_rate
    lo, hi, win = round(cfg.min_s * rate), round(cfg.max_s * rate), max(1, round(cfg.quiet_window_s * rate))
    segments, start, n = [], 0, len(audio)
    while n - start >= lo:
        if n - start <= hi:
            segments.append((start, n))
            break
        span = audio[start + lo - win // 2: start + hi + win // 2].astype(np.float64) ** 2
        energy = np.convolve(span, np.ones(win), mode="valid")[: hi - lo + 1]  # per window, by its centre
        # The latest of the quietest windows: with several pauses (or digital silence) in range, cutting at
        # the first one would make a 2 s clip and leave the rest for the next one.
        floor = energy.min() + QUIET_TOLERANCE * (energy.mean() - energy.min())
        cut = start + lo + int(np.flatnonzero(energy <= floor)[-1])
        segments.append((start, cut))
        start = cut
    return segments


def fixed_segments(num_samples: int, length: int) -> list[tuple[int, int]]:
    return [(s, s + length) for s in range(0, num_samples - length + 1, length)]


class AudioSplitStage(Stage):
    name = "audio_split"

    def process(self, record: Record) -> list[Record]:
        cfg = self.cfg.audio_split
        with self.source(record) as path:
            audio = decode_audio(path, cfg.sample_rate)
        if cfg.purpose == "pretrain":
            segments = quiet_cut_segments(audio, cfg)
        else:
            segments = fixed_segments(len(audio), round(cfg.finetune_s * cfg.sample_rate))
        if not segments:
            return [reject(record, "too_short", f"{len(audio) / cfg.sample_rate:.2f} s of audio")]
        outputs = []
        for k, (a, b) in enumerate(segments):
            clip_id = f"{record['id']}_{k:04d}"
            rel = f"audio/{clip_id}.wav"
            with self.staged(rel) as tmp:
                write_wav(tmp, audio[a:b], cfg.sample_rate)
            outputs.append(ok({"id": clip_id, "source": record["source"], "source_id": record["id"],
                               "start_s": round(a / cfg.sample_rate, 6), "end_s": round(b / cfg.sample_rate, 6),
                               "duration_s": round((b - a) / cfg.sample_rate, 6), "sample_rate": cfg.sample_rate,
                               "num_samples": b - a, "audio": rel, "purpose": cfg.purpose}))
        return outputs
