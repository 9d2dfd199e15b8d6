"""The sync metric and prompt adherence of toy clips, measured from the media alone (frames + waveform).

Per clip: the scene kind (classified from pixels and sound), the objects' count and colours, visual event
times (ball contacts, lamp flashes) and audio onset times. Sync = the share of visual events with an audio
onset within +-1 video frame (41.7 ms at 24 fps) and the median signed offset (audio minus video, ms) of the
matched ones; face scenes instead get the Pearson correlation between mouth opening (pixels) and speech
loudness per video frame. With the clip's ground truth (the world's sidecar) the detections are also
checked against it: kind, count and colours right, and the share of true events found in each stream.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ovi.toy import vision
from ovi.toy.hearing import detect_onsets, frame_rms

OBJECT_MAX_AREA = 0.08  # a lane whose object covers more of the frame is scenery or a face, not a ball/lamp
BOUNCE_MIN_TRAVEL = 0.15  # a ball moves up and down at least this share of the frame height
FLASH_MIN_EVENTS = 2
SPEECH_MIN_CV = 0.5  # speech loudness per frame varies (pauses, syllables); steady ambience does not


@dataclass
class ClipScore:
    kind: str
    count: int
    colours: list[str]
    visual_events_s: list[float]
    onsets_s: list[float]
    share_matched: float = math.nan  # NaN: no visual events to match (face / ambient)
    median_offset_ms: float = math.nan
    median_abs_offset_ms: float = math.nan
    mouth_corr: float = math.nan  # face scenes only
    truth: dict = field(default_factory=dict)  # comparisons with the sidecar, when there is one

    def as_dict(self) -> dict:
        return asdict(self)


def match_events(visual_s: np.ndarray, onsets_s: np.ndarray, tolerance_s: float) -> tuple[float, np.ndarray]:
    """Share of ``visual_s`` with an onset within ``tolerance_s``, and the signed offsets (onset - visual, s)
    of those matched (each to its nearest onset)."""
    visual_s, onsets_s = np.asarray(visual_s, float), np.asarray(onsets_s, float)
    if visual_s.size == 0:
        return math.nan, np.zeros(0)
    if onsets_s.size == 0:
        return 0.0, np.zeros(0)
    diff = onsets_s[None, :] - visual_s[:, None]  # [visual, onsets]
    nearest = diff[np.arange(len(visual_s)), np.abs(diff).argmin(axis=1)]
    hit = np.abs(nearest) <= tolerance_s + 1e-9
    return float(hit.mean()), nearest[hit]


def speech_cv(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> float:
    """Coefficient of variation of the per-frame loudness."""
    rms = frame_rms(audio, sample_rate, fps, num_frames)
    return float(rms.std() / max(float(rms.mean()), 1e-9))


def classify(frames: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int
             ) -> tuple[str, list[vision.Lane]]:
    """The scene kind from pixels and sound, and the object lanes it was decided on."""
    h = frames.shape[1]
    objects = [ln for ln in vision.lanes(frames) if ln.area <= OBJECT_MAX_AREA]
    if objects and max(vision.vertical_travel(ln, h) for ln in objects) >= BOUNCE_MIN_TRAVEL:
        return "bounce", objects
    if objects and sum(len(vision.flash_frames(ln)) for ln in objects) >= FLASH_MIN_EVENTS:
        return "flash", objects
    kind = "face" if speech_cv(audio, sample_rate, fps, len(frames)) >= SPEECH_MIN_CV else "ambient"
    return kind, []


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def score_clip(frames: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int,
               truth: dict | None = None) -> ClipScore:
    """Score one clip: ``frames`` uint8 [T, H, W, 3], ``audio`` float [N] (sample 0 = frame 0's time)."""
    h = frames.shape[1]
    kind, objects = classify(frames, audio, fps, sample_rate)
    if kind == "bounce":
        visual = np.concatenate([vision.contact_frames(ln, h) for ln in objects])
    elif kind == "flash":
        visual = np.concatenate([vision.flash_frames(ln) for ln in objects])
    else:
        visual = np.zeros(0)
    visual_s = np.sort(visual) / fps
    onsets_s = detect_onsets(audio, sample_rate)
    share, offsets = match_events(visual_s, onsets_s, 1.0 / fps)
    score = ClipScore(kind=kind, count={"face": 1, "ambient": 0}.get(kind, len(objects)),
                      colours=[ln.colour for ln in objects], visual_events_s=visual_s.round(4).tolist(),
                      onsets_s=onsets_s.round(4).tolist(), share_matched=share)
    if offsets.size:
        score.median_offset_ms = float(np.median(offsets) * 1000)
        score.median_abs_offset_ms = float(np.median(np.abs(offsets)) * 1000)
    mouth = None
    if kind == "face":
        mouth = vision.mouth_opening(frames)
        score.mouth_corr = _pearson(mouth, frame_rms(audio, sample_rate, fps, len(frames)))
    if truth is not None:
        score.truth = compare(score, truth, fps, mouth)
    return score


def compare(score: ClipScore, truth: dict, fps: float, mouth: np.ndarray | None) -> dict:
    """The detections against the world's ground truth (a sidecar)."""
    true_s = np.asarray([e["time_s"] for e in truth.get("events", [])], float)
    true_colours = [o["colour"] for o in truth.get("objects", []) if "colour" in o]
    out = {"kind": truth["kind"], "kind_ok": score.kind == truth["kind"], "count_ok": score.count == truth["count"],
           "colours_ok": score.colours == true_colours, "events": int(true_s.size)}
    if true_s.size:
        out["visual_recall"] = match_events(true_s, np.asarray(score.visual_events_s), 1.0 / fps)[0]
        out["audio_recall"] = match_events(true_s, np.asarray(score.onsets_s), 1.0 / fps)[0]
    if mouth is not None and "mouth_opening" in truth:
        out["mouth_truth_corr"] = _pearson(mouth, truth["mouth_opening"])
    return out


def shuffled_pairs(kinds: Sequence[str]) -> list[int]:
    """For clip i, the clip whose audio to pair with its video for the chance baseline: the next clip of the
    same kind (so onset density matches), or the next clip overall for a kind seen once."""
    order = list(range(len(kinds)))
    partner = [(i + 1) % len(kinds) if len(kinds) > 1 else i for i in order]
    for kind in set(kinds):
        same = [i for i in order if kinds[i] == kind]
        if len(same) > 1:
            for a, b in zip(same, same[1:] + same[:1]):
                partner[a] = b
    return partner


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def summarise(scores: Sequence[ClipScore]) -> dict:
    """Folder-level figures: mean share matched and median offset over event clips, mean face correlation,
    onsets per ambient clip, and adherence rates where ground truth was given."""
    out = {"clips": len(scores),
           "share_matched": _mean([s.share_matched for s in scores]),
           "median_offset_ms": _mean([s.median_offset_ms for s in scores]),
           "median_abs_offset_ms": _mean([s.median_abs_offset_ms for s in scores]),
           "mouth_corr": _mean([s.mouth_corr for s in scores]),
           "onsets_per_ambient_clip": _mean([float(len(s.onsets_s)) for s in scores if s.kind == "ambient"])}
    judged = [s.truth for s in scores if s.truth]
    for key in ("kind_ok", "count_ok", "colours_ok"):
        if judged:
            out[key] = float(np.mean([t[key] for t in judged]))
    for key in ("visual_recall", "audio_recall", "mouth_truth_corr"):
        out[key] = _mean([t[key] for t in judged if key in t])
    return out
