"""train.reliance: a tower's loss with its own clip's partner stream against another clip's. Zero for an
unfused model by construction, non-zero once the cross-modal layers carry anything; the CLI reads a latent
dataset in the precompute format."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from data_pipeline.shards import index_entry, write_index, write_shard
from ovi.config import load_fusion_config
from ovi.models.fusion import FusionModel
from train.data.latents import LatentSample, latent_sample
from train.reliance import main, read_latents, reliance, time_shifted

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs/model/tiny.yaml"


def samples(n: int = 3, video: bool = True) -> list[LatentSample]:
    g = torch.Generator().manual_seed(0)
    return [LatentSample(text=torch.randn(5, 4096, generator=g), audio=torch.randn(20, 20, generator=g),
                         video=torch.randn(48, 3, 4, 4, generator=g) if video else None, meta={"caption": f"clip {i}"})
            for i in range(n)]


def model(fused: bool) -> FusionModel:
    torch.manual_seed(0)
    m = FusionModel(load_fusion_config(TINY)).eval()
    for tower in (m.video_model, m.audio_model):
        torch.nn.init.normal_(tower.head.head.weight, std=0.02)  # a fresh model's heads are zero
        for name, p in tower.named_parameters():
            if "v_fusion" in name:
                torch.nn.init.normal_(p, std=0.2) if fused else torch.nn.init.zeros_(p)
    return m


def test_unfused_towers_do_not_rely_on_each_other_and_fused_ones_do():
    data = samples()
    for row in reliance(model(fused=False), data, (0.3, 0.7)):
        assert row["audio_reliance"] == 0.0 and row["video_reliance"] == 0.0
        assert row["audio_matched"] > 0 and row["video_matched"] > 0
    rows = reliance(model(fused=True), data, (0.3, 0.7))
    assert all(abs(r["audio_reliance"]) > 1e-6 and abs(r["video_reliance"]) > 1e-6 for r in rows)
    assert rows == reliance(model(fused=True), data, (0.3, 0.7))  # the same noise every call


def test_partner_sigma_sets_the_other_streams_noise_level():
    data, fused = samples(), model(fused=True)
    same = reliance(fused, data, (0.6,))[0]
    assert same["partner_sigma"] == 0.6 and reliance(fused, data, (0.6,), partner_sigma=0.6) == [same]
    clean_partner = reliance(fused, data, (0.6,), partner_sigma=0.0)[0]
    assert clean_partner["partner_sigma"] == 0.0
    assert clean_partner["audio_matched"] != same["audio_matched"]  # the audio tower saw a different video
    for row in reliance(model(fused=False), data, (0.6,), partner_sigma=0.1):
        assert row["audio_reliance"] == 0.0 and row["video_reliance"] == 0.0


def test_time_shift_moves_the_own_partner_and_is_blind_to_a_partner_that_never_changes():
    """The 'when' reliance: the mismatch is the own partner moved in time. A partner constant over time looks
    the same moved, so its time reliance is exactly 0 while another clip's partner still counts ('what')."""
    video, audio = [torch.arange(8.0).view(1, 8, 1, 1).expand(48, 8, 2, 2)], [torch.arange(40.0)[:, None]]
    moved_v, moved_a = time_shifted(video, audio, 1.0)  # 1 s = 6 video latent frames, 31 audio latents
    assert torch.equal(moved_v[0][0, :, 0, 0], torch.arange(8.0).roll(6))
    assert torch.equal(moved_a[0][:, 0], torch.arange(40.0).roll(31))
    with pytest.raises(ValueError, match="under one video latent frame"):
        time_shifted(video, audio, 0.05)
    g = torch.Generator().manual_seed(1)
    still = [LatentSample(text=torch.randn(5, 4096, generator=g),
                          audio=torch.randn(1, 20, generator=g).expand(20, 20).clone(),
                          video=torch.randn(48, 1, 4, 4, generator=g).expand(48, 3, 4, 4).clone(), meta={})
             for _ in range(3)]
    fused = model(fused=True)
    when = reliance(fused, still, (0.5,), time_shift=1.0)[0]
    what = reliance(fused, still, (0.5,))[0]
    assert when["audio_reliance"] == 0.0 and when["video_reliance"] == 0.0
    assert abs(what["audio_reliance"]) > 1e-6 and abs(what["video_reliance"]) > 1e-6
    moving = reliance(fused, samples(), (0.5,), time_shift=0.17)[0]  # 1 of 3 latent frames: random streams change
    assert abs(moving["audio_reliance"]) > 1e-6 and abs(moving["video_reliance"]) > 1e-6


def write_latents(folder: Path, items: list[LatentSample]) -> Path:
    shard = folder / "shards" / "latents-000000.tar"
    shard.parent.mkdir(parents=True)
    write_shard(shard, [latent_sample(f"clip_{i}", s) for i, s in enumerate(items)])
    write_index(shard.parent, [index_entry(shard)], "latents")
    return folder


def test_cli_reads_a_latent_dataset_and_writes_the_rows(tmp_path, capsys):
    latents = write_latents(tmp_path / "lat", samples(4))
    assert [s.meta["caption"] for s in read_latents(latents, 3)] == ["clip 0", "clip 1", "clip 2"]
    weights = tmp_path / "fusion.safetensors"
    save_file(model(fused=True).state_dict(), weights)
    out = tmp_path / "rows.json"
    assert main(["--model", str(TINY), "--weights", str(weights), "--latents", str(latents), "--clips", "3",
                 "--sigmas", "0.5", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["sigma"] for r in rows] == [0.5] and "audio reliance" in capsys.readouterr().out
    assert rows[0]["audio_shuffled"] != rows[0]["audio_matched"]


def test_audio_only_latents_and_bad_arguments_are_refused(tmp_path):
    latents = write_latents(tmp_path / "audio", samples(2, video=False))
    with pytest.raises(ValueError, match="audio-only latents"):
        read_latents(latents, 2)
    with pytest.raises(SystemExit):
        main(["--model", str(TINY), "--weights", str(tmp_path / "none.safetensors"), "--latents", str(latents)])
    with pytest.raises(SystemExit):
        main(["--model", str(TINY), "--weights", "x", "--latents", str(latents), "--sigmas", "0"])
    with pytest.raises(SystemExit):
        main(["--model", str(TINY), "--weights", "x", "--latents", str(latents), "--partner-sigma", "2"])
    bare = tmp_path / "bare.safetensors"
    save_file(model(fused=False).state_dict(), bare)
    with pytest.raises(SystemExit):  # no --model and no recorded model config
        main(["--weights", str(bare), "--latents", str(latents)])
