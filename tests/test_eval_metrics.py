"""Every ovi-eval metric's code path on CPU with random networks of the released architectures (tiny
configs where the library allows), plus known answers: identical references give FD 0 and KL 0."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from ovi.components import char_tokenizer
from ovi.eval.clips import discover
from ovi.eval.run import evaluate, score_clips
from ovi.eval.weights import MissingWeights
from ovi.toy.world import make_clip, write_clip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two toy clips named like ovi-generate's output, their references (the same clips) and a prompts file."""
    out = tmp_path_factory.mktemp("gen")
    for i, kind in enumerate(("bounce", "face")):
        write_clip(out, f"{i:03d}_{kind}_seed0", make_clip(kind, [0, i], 64))
    refs = tmp_path_factory.mktemp("refs")
    for mp4 in out.glob("*.mp4"):
        shutil.copy(mp4, refs / mp4.name)
    return out, refs


def test_discover_reads_sidecars_and_references(folder):
    out, refs = folder
    clips = discover(out, references=refs)
    assert [c.id for c in clips] == ["000_bounce_seed0", "001_face_seed0"]
    assert all(c.prompt and c.truth and c.reference for c in clips)
    assert clips[1].audio.ndim == 1 and clips[0].video[0].shape[-1] == 3


def test_panns_identical_references_give_zero_fd_and_kl(folder):
    from ovi.eval.audio_metrics import PannsMetric, cnn14

    torch.manual_seed(0)
    out, refs = folder
    rows, agg = PannsMetric(cnn14(), max_seconds=1.0).score(discover(out, references=refs))
    assert agg["panns_fd"] == pytest.approx(0.0, abs=1e-3)
    assert agg["panns_kl"] == pytest.approx(0.0, abs=1e-6)
    assert agg["panns_is"] >= 1.0 and len(rows) == 2


def test_clap_score_is_a_cosine(folder):
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    cfg = ClapConfig(
        text_config=dict(vocab_size=len(char_tokenizer()), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, projection_dim=16, max_position_embeddings=600),
        audio_config=dict(depths=[1, 1], num_attention_heads=[2, 2], hidden_size=32, patch_embeds_hidden_size=16,
                          num_mel_bins=64, spec_size=256, window_size=8, projection_dim=16,
                          enable_fusion=True),
        projection_dim=16)
    proc = ClapProcessor(ClapFeatureExtractor(), char_tokenizer())
    from ovi.eval.audio_metrics import ClapMetric

    rows, agg = ClapMetric(ClapModel(cfg), proc).score(discover(folder[0]))
    assert all(-1.0 <= r["clap"] <= 1.0 for r in rows) and math.isfinite(agg["clap"])


def test_wer_against_the_spoken_text(folder):
    from ovi.eval.audio_metrics import WerMetric, normalise_words

    clips = discover(folder[0])
    clips[0].prompt = "a ball bounces"  # no <S>…<E>: not scored
    clips[1].prompt = "A man says <S>Hello, brave new world!<E> Audio: a voice"
    rows, agg = WerMetric(lambda audio: "hello brave old world").score(clips)
    assert math.isnan(rows[0]["wer"]) and rows[1]["wer"] == pytest.approx(0.25) and agg["wer"] == pytest.approx(0.25)
    assert normalise_words("Hello,  World!") == "hello world"


def test_whisper_transcriber_runs_a_random_whisper(folder):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    tok = char_tokenizer()
    cfg = WhisperConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        num_mel_bins=80, max_source_positions=1500, max_target_positions=64,
                        decoder_start_token_id=1, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    from ovi.eval.audio_metrics import WhisperTranscriber

    asr = WhisperTranscriber(WhisperForConditionalGeneration(cfg), WhisperProcessor(WhisperFeatureExtractor(), tok),
                             max_new_tokens=4)
    assert isinstance(asr(discover(folder[0])[1].audio), str)


def test_audiobox_axes_with_the_released_architecture(folder):
    from audiobox_aesthetics.model.aes import AesMultiOutput
    from ovi.eval.audio_metrics import AUDIOBOX_AXES, AudioboxMetric

    torch.manual_seed(0)
    tt = {a: {"mean": 5.0, "std": 2.0} for a in AUDIOBOX_AXES}
    clips = discover(folder[0])
    for c in clips:  # 1 s is enough to run the WavLM encoder
        c.__dict__["audio"] = c.audio[:16000]
    rows, agg = AudioboxMetric(AesMultiOutput(target_transform=tt)).score(clips)
    assert set(agg) == {f"aes_{a}" for a in AUDIOBOX_AXES} and all(math.isfinite(v) for v in agg.values())


def test_clip_text_and_identity(folder, tmp_path):
    from PIL import Image
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor
    from ovi.eval.video_metrics import ClipMetrics

    cfg = CLIPConfig(text_config=dict(vocab_size=len(char_tokenizer()), hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=37, max_position_embeddings=600),
                     vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=37, image_size=32, patch_size=8), projection_dim=16)
    proc = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                         char_tokenizer())
    clips = discover(folder[0])
    first = clips[0].video[0][0]
    Image.fromarray(first).save(tmp_path / "first.png")
    clips[0].image = tmp_path / "first.png"
    metric = ClipMetrics(CLIPModel(cfg), proc)
    rows, agg = metric.score(clips)
    assert "identity" in rows[0] and "identity" not in rows[1] and -1 <= agg["clip_text"] <= 1
    # Known answer: the first frame scored against itself is a cosine of 1.
    f = metric.image_features([first])
    assert float(f @ f.T) == pytest.approx(1.0, abs=1e-5)


def test_fvd_with_the_i3d_architecture(folder):
    from ovi.eval.video_metrics import FvdMetric, i3d

    torch.manual_seed(0)
    out, refs = folder
    _, agg = FvdMetric(i3d()).score(discover(out, references=refs))
    assert agg["fvd"] == pytest.approx(0.0, abs=1e-2)
    with pytest.raises(ValueError, match="--references"):
        FvdMetric(i3d()).score(discover(out))


def test_syncnet_lse_from_the_real_pipeline(folder, tmp_path, monkeypatch):
    """S3FD is told where the face is (a random detector finds none); tracking, cropping and the random
    SyncNet then run for real and LSE-C / LSE-D are the best track's numbers."""
    from syncnet_python.detectors.s3fd.nets import S3FDNet
    from syncnet_python.SyncNetModel import S
    from ovi.eval.sync_metrics import SyncNetMetric

    torch.manual_seed(0)
    torch.save(S3FDNet(device="cpu").state_dict(), tmp_path / "sfd_face.pth")
    torch.save(S().state_dict(), tmp_path / "syncnet_v2.model")
    box = np.array([[8.0, 8.0, 56.0, 56.0, 0.99]])
    monkeypatch.setattr("syncnet_python.detectors.s3fd.S3FD.detect_faces", lambda self, *a, **k: box.copy())
    metric = SyncNetMetric.load(tmp_path / "sfd_face.pth", tmp_path / "syncnet_v2.model")
    metric.pipeline.cfg.min_face_size, metric.pipeline.cfg.min_track = 10, 20
    clips = discover(folder[0])[1:]
    rows, agg = metric.score(clips)
    assert rows[0]["face_tracks"] >= 1 and agg["clips_with_face"] == 1
    assert math.isfinite(agg["lse_c"]) and agg["lse_d"] >= 0 and isinstance(rows[0]["sync_offset"], int)


def test_toy_metric_gives_the_ceiling_on_real_toy_clips(folder):
    report = evaluate(folder[0], ["toy"])
    agg = report.aggregate
    assert agg["toy_share_matched"] == 1.0 and agg["toy_kind_ok"] == 1.0 and agg["toy_mouth_corr"] > 0.9
    assert abs(agg["toy_median_offset_ms"]) < 1000 / 24


def test_missing_weights_name_the_file_and_other_metrics_still_run(folder):
    report = evaluate(folder[0], ["toy", "panns", "syncnet", "desync"], weights={"panns": "/nope.pth"})
    assert "Cnn14_16k_mAP=0.438.pth" in report.errors["panns"] and "zenodo" in report.errors["panns"]
    assert "syncnet_v2.model" in report.errors["syncnet"] or "sfd_face.pth" in report.errors["syncnet"]
    assert "desync" in report.errors and "toy_share_matched" in report.aggregate
    with pytest.raises(MissingWeights, match="--weights clap=PATH"):
        from ovi.eval.registry import build_metric

        build_metric("clap", {})
    assert score_clips(discover(folder[0]), []).aggregate == {"clips": 2}
