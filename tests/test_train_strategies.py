"""Training stages as strategies: streams with per-token timesteps, masked losses, checkpoint metadata."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ovi.checkpoints import TrainingMetadata, save_fusion_checkpoint
from ovi.config import load_fusion_config
from ovi.models.fusion import FusionModel
from ovi.models.tower import Tower
from train.config import ObjectiveConfig, SigmaConfig, load_train_config
from train.objective import FlowMatchingObjective
from train.strategies import AudioStage, FusionStage, strategy_for, stream_mse, token_weights

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs/model/tiny.yaml"


def _cfg(stage: str, *overrides: str):
    name = {"fusion": "fusion", "audio_pretrain": "audio_pretrain"}[stage]
    return load_train_config(REPO / f"configs/train/{name}.yaml", [f"model={TINY}", "run_dir=/tmp/unused",
                                                                   "data.shards=[/tmp/unused]", *overrides])


def _objective(**kw) -> FlowMatchingObjective:
    cfg = ObjectiveConfig(loss_weight_video=0.85, loss_weight_audio=0.15, **kw)
    return FlowMatchingObjective(cfg, torch.zeros(1, 4096), torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def fusion() -> FusionModel:
    return FusionModel(load_fusion_config(TINY))


def test_each_stage_gets_its_strategy(fusion: FusionModel) -> None:
    assert isinstance(strategy_for(_cfg("fusion"), fusion), FusionStage)
    audio = strategy_for(_cfg("audio_pretrain"), fusion.audio_model)
    assert isinstance(audio, AudioStage) and audio.modalities == ("audio",) and not audio.has_video


def test_clean_first_frame_is_timestep_zero_and_outside_the_loss(fusion: FusionModel) -> None:
    strategy = FusionStage(_cfg("fusion"), fusion)
    x = torch.randn(48, 3, 4, 4)
    nb = _objective(first_frame_clean_prob=1.0).prepare([x], [torch.randn(6, 20)], [torch.ones(2, 4096)], torch.float32)
    streams = strategy.streams(nb)
    video = streams["video"]
    per_frame = 2 * 2  # (4/2) * (4/2) tokens per latent frame
    assert video.t.shape == (1, 12) and (video.t[0, :per_frame] == 0).all()
    assert (video.t[0, per_frame:] == nb.t[0]).all() and streams["audio"].t.shape == (1,)
    assert video.loss_mask.sum() == 8 and streams["audio"].loss_mask is None

    pred = {"video": [nb.video_target[0].clone()], "audio": [nb.audio_target[0].clone()]}
    pred["video"][0][:, 0] += 100.0  # errors on the conditioning frame do not count
    out = strategy.loss(nb, streams, pred)
    assert float(out.loss) == 0.0 and set(out.parts) == {"loss_video", "loss_audio"}
    pred["video"][0][:, 1] += 1.0  # one non-conditioning frame off by 1: the mean over the other 2 frames is 0.5
    assert float(strategy.loss(nb, streams, pred).parts["loss_video"]) == pytest.approx(0.5)


def test_stream_mse_is_token_weighted_over_unpadded_samples(fusion: FusionModel) -> None:
    from ovi.models.stream import Stream

    pred = [torch.zeros(2, 20), torch.zeros(6, 20)]
    target = [torch.ones(2, 20), torch.full((6, 20), 2.0)]
    stream = Stream(pred, torch.tensor([1, 1]), [torch.zeros(1, 4096)] * 2)
    assert float(stream_mse(fusion.audio_model, pred, target, stream)) == pytest.approx((2 * 20 + 6 * 20 * 4) / (8 * 20))
    weights = [torch.tensor([3.0, 1.0]), torch.ones(6)]  # the first latent's error counts 3 times
    weighted = (3 * 20 + 20 + 6 * 20 * 4) / (8 * 20)
    assert float(stream_mse(fusion.audio_model, pred, target, stream, weights)) == pytest.approx(weighted)
    masked = Stream(pred, torch.tensor([1, 1]), [torch.zeros(1, 4096)] * 2,
                    loss_mask=torch.tensor([[False, True, False, False, False, False], [True] * 6]))
    masked_mse = float(stream_mse(fusion.audio_model, pred, target, masked, weights))
    assert masked_mse == pytest.approx((20 + 6 * 20 * 4) / (7 * 20))  # the weighted latent is masked out


def test_video_motion_weights_weigh_each_token_by_its_patch(fusion: FusionModel) -> None:
    tower = fusion.video_model  # patches of 1 x 2 x 2 latent positions
    positions = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 6)
    per_token = token_weights(tower, positions)
    # token (f, h', w'), in that order, covers positions [f, 2h':2h'+2, 2w':2w'+2]: mean 24 f + 12 h' + 2 w' + 3.5
    expected = torch.tensor([24.0 * f + 12 * h + 2 * w + 3.5 for f in range(2) for h in range(2) for w in range(3)])
    torch.testing.assert_close(per_token, expected)
    assert per_token.shape == (tower.num_tokens(torch.zeros(48, 2, 4, 6)),)

    strategy = FusionStage(_cfg("fusion"), fusion)
    nb = _objective().prepare([torch.randn(48, 2, 4, 6)], [torch.randn(6, 20)], [torch.ones(2, 4096)], torch.float32)
    streams = strategy.streams(nb)
    pred = {"video": [nb.video_target[0].clone()], "audio": [nb.audio_target[0].clone()]}
    pred["video"][0][:, 0, :2, :2] += 1.0  # the first token wrong by 1 in every element; 12 tokens in all
    assert float(strategy.loss(nb, streams, pred).parts["loss_video"]) == pytest.approx(1 / 12)
    w = torch.ones(2, 4, 6)
    w[0, :2, :2] = 3.0  # that token's error counts 3 times
    nb.video_weight = [w]
    assert float(strategy.loss(nb, streams, pred).parts["loss_video"]) == pytest.approx(3 / 12)


def test_token_counts_and_flops_come_from_the_towers(fusion: FusionModel) -> None:
    strategy = FusionStage(_cfg("fusion"), fusion)
    nb = _objective().prepare([torch.randn(48, 3, 4, 6)], [torch.randn(7, 20)], [torch.ones(2, 4096)], torch.float32)
    tokens = strategy.tokens(nb)
    assert tokens == {"video": [3 * 2 * 3], "audio": [7]}
    counters = strategy.flop_counters()
    expected = counters["video"].train_flops(18, 7) + counters["audio"].train_flops(7, 18)
    assert strategy.flops(tokens, counters) == expected


def test_checkpoint_metadata_rebuilds_the_model_and_names_the_clip(fusion: FusionModel, tmp_path: Path) -> None:
    meta = FusionStage(_cfg("fusion", "data.video.num_frames=241"), fusion).checkpoint_metadata()
    assert meta.stage == "fusion" and meta.num_frames == 241 and meta.prompt_style == "audio_colon"
    assert meta.fusion_config() == load_fusion_config(TINY)
    path = save_fusion_checkpoint(fusion, tmp_path / "export.safetensors", metadata=meta)
    assert TrainingMetadata.read(path) == meta  # survives the file's header as strings
    audio_meta = AudioStage(_cfg("audio_pretrain"), Tower(load_fusion_config(TINY).audio)).checkpoint_metadata()
    assert audio_meta.num_frames is None and audio_meta.stage == "audio_pretrain"


def test_an_independently_drawn_audio_sigma_reaches_the_audio_stream_only(fusion: FusionModel) -> None:
    strategy = FusionStage(_cfg("fusion", "objective.sigma.independent_prob=1.0"), fusion)
    nb = _objective(sigma=SigmaConfig(independent_prob=1.0)).prepare(
        [torch.randn(48, 3, 4, 4)] * 4, [torch.randn(6, 20)] * 4, [torch.ones(2, 4096)] * 4, torch.float32)
    streams = strategy.streams(nb)
    assert (nb.audio_sigma != nb.sigma).all()
    torch.testing.assert_close(streams["audio"].t, 1000 * nb.audio_sigma)
    torch.testing.assert_close(streams["video"].t, 1000 * nb.sigma)
    with pytest.raises(ValueError, match="objective.sigma.independent_prob"):
        _cfg("fusion", "objective.sigma.independent_prob=1.5")
