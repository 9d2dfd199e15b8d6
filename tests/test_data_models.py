"""Weight-needing stages with randomly initialised networks built here: SyncNet + S3FD (sync stage and face
count), CLIP + LAION head (aesthetic), a RAFT-shaped flow model. The scores mean nothing; what is tested is
that the code path runs end to end and that the decision rules act on what the networks return."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data_pipeline import media, synth
from data_pipeline.config import SyncConfig, load_data_config
from data_pipeline.filters.aesthetic import laion_head
from data_pipeline.filters.faces import face_category, keep_for_balance
from data_pipeline.filters.motion import RaftFlow, motion_score, pair_indices
from data_pipeline.stages import build_stage
from data_pipeline.stages.sync import sync_decision
from ovi.media import write_wav

SIZE = (96, 64)
FACE_BOX = np.array([[20.0, 8.0, 76.0, 56.0, 0.99]])  # x1, y1, x2, y2, score


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from syncnet_python.detectors.s3fd.nets import S3FDNet
    from syncnet_python.SyncNetModel import S

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(S3FDNet(device="cpu").state_dict(), d / "sfd_face.pth")
    torch.save(S().state_dict(), d / "syncnet_v2.model")
    return d


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A short talking clip laid out like the split stage's output: clips/{id}.mp4 + clips/{id}.wav."""
    out = tmp_path_factory.mktemp("models_out")
    (out / "clips").mkdir()
    synth.make_video(out / "clips" / "talk.mp4", scenes=(2.6,), size=SIZE, fps=24, audio="speech")
    write_wav(out / "clips" / "talk.wav", media.decode_audio(out / "clips" / "talk.mp4", 16_000), 16_000)
    record = {"id": "talk", "source": "talk.mp4", "video": "clips/talk.mp4", "audio": "clips/talk.wav",
              "num_frames": 62, "width": SIZE[0], "height": SIZE[1], "status": "ok"}
    return out, record


def sync_cfg(out, weights, *overrides):
    return load_data_config(None, [f"output={out}", f"sync.s3fd_weights={weights / 'sfd_face.pth'}",
                                   f"sync.syncnet_weights={weights / 'syncnet_v2.model'}", "sync.min_track=20",
                                   "sync.min_face_size=10", "sync.facedet_scale=0.5", *overrides])


@pytest.mark.parametrize("offsets, confs, reason", [
    ([0], [2.0], None),
    ([-3], [1.6], None),
    ([4], [5.0], "out_of_sync"),
    ([1], [1.5], "low_sync_confidence"),  # strictly greater than 1.5
    ([9, 2], [1.0, 3.0], None),  # the most confident track decides
    ([], [], "no_face_track"),  # no face track: its own reason by default
])
def test_sync_decision_rule(offsets, confs, reason):
    got, scores = sync_decision(offsets, confs, SyncConfig())
    assert got == reason and scores["sync_tracks"] == len(offsets)
    kept, scores = sync_decision([], [], SyncConfig(on_no_face_track="keep"))  # non-speech data
    assert kept is None and scores["sync_status"] == "no_face_track"


def test_sync_stage_without_face_track(clip, weights, monkeypatch):
    out, record = clip
    monkeypatch.setattr("syncnet_python.detectors.s3fd.S3FD.detect_faces", lambda self, *a, **k: np.empty((0, 5)))
    for policy, status in (("keep", "ok"), ("reject", "rejected")):
        stage = build_stage("sync", sync_cfg(out, weights, f"sync.on_no_face_track={policy}"))
        stage.setup()
        (result,) = stage.run(record)
        assert result["status"] == status and result["scores"]["sync_tracks"] == 0
        assert status == "ok" or result["reason"] == "no_face_track"
        assert result["scores"]["sync_status"] == "no_face_track"  # kept clips say they were never checked


def test_sync_stage_full_path_random_networks(clip, weights, monkeypatch):
    """S3FD is told where the face is (a random detector finds none); tracking, cropping at 25 fps and the
    random SyncNet then run for real, and the decision uses SyncNet's numbers."""
    out, record = clip
    monkeypatch.setattr("syncnet_python.detectors.s3fd.S3FD.detect_faces", lambda self, *a, **k: FACE_BOX.copy())
    seen = []
    from syncnet_python.SyncNetInstance import SyncNetInstance

    real_evaluate = SyncNetInstance.evaluate

    def spy(self, opt):
        result = real_evaluate(self, opt)
        seen.append(result)
        return result

    monkeypatch.setattr(SyncNetInstance, "evaluate", spy)
    cfg = sync_cfg(out, weights)
    stage = build_stage("sync", cfg)
    stage.setup()
    (result,) = stage.run(record)
    assert len(seen) == 1, "one face track should have been cropped and scored"
    offset, conf, _ = seen[0]
    scores = result["scores"]
    assert scores["sync_tracks"] == 1 and scores["sync_offset"] == offset
    assert scores["sync_confidence"] == pytest.approx(conf, abs=1e-4)
    expected, _ = sync_decision([offset], [conf], cfg.sync)
    assert result["reason"] == expected and result["status"] == ("ok" if expected is None else "rejected")


@pytest.fixture(scope="module")
def tiny_clip_model(tmp_path_factory):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    d = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=24)
    CLIPVisionModelWithProjection(config).save_pretrained(d / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(d / "clip")
    dims = [24, 1024, 128, 64, 16, 1]
    head = {}
    for j, idx in enumerate([0, 2, 4, 6, 7]):
        head[f"layers.{idx}.weight"] = torch.randn(dims[j + 1], dims[j]) * 0.05
        head[f"layers.{idx}.bias"] = torch.randn(dims[j + 1]) * 0.05
    torch.save(head, d / "head.pth")
    return d


def test_aesthetic_filter_random_networks(clip, tiny_clip_model):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    out, record = clip
    base = [f"output={out}", "filter.min_width=64", "filter.min_height=64", "filter.motion.enabled=false",
            "filter.face.enabled=false", f"filter.aesthetic.clip_model={tiny_clip_model / 'clip'}",
            f"filter.aesthetic.predictor_weights={tiny_clip_model / 'head.pth'}", "filter.aesthetic.num_frames=3"]
    stage = build_stage("filter", load_data_config(None, [*base, "filter.aesthetic.min_score=-1e9"]))
    stage.setup()
    (kept,) = stage.run(record)
    assert kept["status"] == "ok"
    # The score is CLIP embed -> L2 normalise -> LAION head, averaged over the sampled frames.
    frames = media.decode_frames(out / record["video"], select=[0, 30, 61])
    proc = CLIPImageProcessor.from_pretrained(tiny_clip_model / "clip")
    clip_model = CLIPVisionModelWithProjection.from_pretrained(tiny_clip_model / "clip").eval()
    with torch.no_grad():
        emb = clip_model(**proc(images=list(frames), return_tensors="pt")).image_embeds
        want = laion_head(torch.load(tiny_clip_model / "head.pth"))(emb / emb.norm(dim=-1, keepdim=True)).mean()
    assert kept["scores"]["aesthetic"] == pytest.approx(float(want), abs=1e-5)
    stage = build_stage("filter", load_data_config(None, [*base, "filter.aesthetic.min_score=1e9"]))
    stage.setup()
    (dropped,) = stage.run(record)
    assert dropped["reason"] == "low_aesthetic" and dropped["scores"]["aesthetic"] == kept["scores"]["aesthetic"]


def test_face_count_random_s3fd_and_balance(clip, weights, monkeypatch):
    out, record = clip
    base = [f"output={out}", "filter.min_width=64", "filter.min_height=64", "filter.motion.enabled=false",
            "filter.aesthetic.enabled=false", f"filter.face.s3fd_weights={weights / 'sfd_face.pth'}",
            "filter.face.num_frames=2"]
    stage = build_stage("filter", load_data_config(None, base))
    stage.setup()
    (result,) = stage.run(record)  # the random detector really runs on the frames
    assert result["status"] == "ok" and result["face_category"] == face_category(result["face_count"])
    # Two faces per frame: a multi-person clip, dropped when that category is subsampled to nothing.
    monkeypatch.setattr("syncnet_python.detectors.s3fd.S3FD.detect_faces",
                        lambda self, *a, **k: np.concatenate([FACE_BOX, FACE_BOX + [0, 0, 0, 0, 0]]))
    stage = build_stage("filter", load_data_config(None, [*base, "filter.face.keep_fraction_multi=0.0"]))
    stage.setup()
    (result,) = stage.run(record)
    assert (result["face_count"], result["face_category"], result["reason"]) == (2, "multi", "balance_multi")


def test_balance_subsampling_is_deterministic_and_proportional():
    ids = [f"clip{i}" for i in range(2000)]
    kept = [keep_for_balance(i, 0.25) for i in ids]
    assert kept == [keep_for_balance(i, 0.25) for i in ids]
    assert 0.2 < sum(kept) / len(ids) < 0.3


class ConstantFlowModel(torch.nn.Module):
    """RAFT's interface with a known answer: every pixel moves by (3, 4) px; it records the input it saw."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # so .to()/.eval() behave like a real model
        self.seen = []

    def forward(self, a, b, num_flow_updates=12):
        self.seen.append((a.shape, float(a.min()), float(a.max())))
        flow = torch.zeros(a.shape[0], 2, *a.shape[2:])
        flow[:, 0], flow[:, 1] = 3.0 * self.scale, 4.0 * self.scale
        return [flow * 0.5, flow]  # RAFT returns every refinement; the last is the answer


def test_raft_wrapper_and_motion_score():
    model = ConstantFlowModel()
    flow = RaftFlow(model)
    frames = np.random.default_rng(0).integers(0, 256, (6, 30, 50, 3), dtype=np.uint8)
    vectors = flow(frames[:3], frames[3:])
    assert vectors.shape == (3, 30, 50, 2) and np.allclose(vectors[..., 0], 3) and np.allclose(vectors[..., 1], 4)
    shape, lo, hi = model.seen[0]
    assert tuple(shape) == (3, 3, 32, 56) and -1.0 <= lo < hi <= 1.0  # padded to /8, scaled to [-1, 1]
    pairs = pair_indices(6, 3, 2)
    score = motion_score(dict(enumerate(frames)), pairs, flow)
    assert score == pytest.approx(100 * 5.0 / 2 / np.hypot(30, 50))  # 5 px over a 2-frame gap, % of diagonal
