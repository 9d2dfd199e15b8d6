"""Generation end to end: the CLI on tiny random components writes a playable mp4 with sound."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovi.cli.generate import main, read_jobs
from ovi.codecs.audio_codec import AudioCodec
from ovi.config import InferenceConfig, load_config
from ovi.media import read_audio, read_video
from ovi.imaging import i2v_size, size_for_area
from ovi.validation import InvalidRequest, check_request
from ovi.pipeline import OviPipeline, apply_training_metadata

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs/inference/tiny_cpu.yaml")
# Short clips keep the CPU runs quick: 25 frames = 7 latent frames, 32 audio latents (ovi.geometry) = 1.024 s.
FAST = ["num_frames=25", "num_steps=2", f"model={REPO / 'configs/model/tiny.yaml'}"]


def test_size_for_area_snaps_to_32() -> None:
    assert size_for_area(1, 1, 720 * 720) == (704, 704)  # the release's "720x720" runs at 704x704
    assert size_for_area(1, 1, 960 * 960) == (960, 960)
    h, w = size_for_area(16, 9, 960 * 960)
    assert (h % 32, w % 32) == (0, 0) and w > h and h * w <= 960 * 960
    with pytest.raises(ValueError):
        size_for_area(0, 1, 100)


def test_cli_tiny_run_writes_mp4_with_sound(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["--config", TINY, *FAST, f"output_dir={out}", "save_wav=true", "num_samples=2"]) == 0
    mp4s = sorted(out.glob("*.mp4"))
    assert len(mp4s) == 2 and len(list(out.glob("*.wav"))) == 2  # two seeds
    frames, fps = read_video(mp4s[0])
    assert frames.shape == (25, 64, 64, 3) and fps == 24
    audio = read_audio(mp4s[0])
    assert abs(len(audio) - AudioCodec.num_samples(32)) <= 1024  # within one AAC frame of 32 latents
    assert np.abs(audio).max() > 0
    # Different seeds give different samples.
    assert not np.array_equal(frames, read_video(mp4s[1])[0])


def test_image_to_video_with_cpu_offload(tmp_path: Path) -> None:
    image = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)).save(image)
    cfg = load_config(InferenceConfig, TINY, FAST + ["cpu_offload=true", "area=8192"])
    result = OviPipeline.from_config(cfg).generate(cfg.prompt, image=image, progress=False)
    # Size follows the image's 16:9 aspect ratio at the configured area (the reference's i2v rule).
    assert result.video.shape[:2] == (3, 25) and result.video.shape[2:] == i2v_size(90, 160, 8192)
    assert result.video.abs().max() <= 1.0
    assert result.audio.shape == (AudioCodec.num_samples(32),)


def test_same_seed_reproduces(tmp_path: Path) -> None:
    cfg = load_config(InferenceConfig, TINY, FAST)
    pipe = OviPipeline.from_config(cfg)
    a = pipe.generate(cfg.prompt, seed=5, progress=False)
    b = pipe.generate(cfg.prompt, seed=5, progress=False)
    assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)


def test_release_preset_without_files_fails_fast_naming_each(tmp_path: Path, capsys) -> None:
    code = main(["--config", str(REPO / "configs/inference/960x960_10s.yaml"),
                 f"checkpoints.root={tmp_path}", "--prompt", "A dog barks. Audio: barking"])
    err = capsys.readouterr().err
    assert code == 2
    for name in ("model_960x960_10s.safetensors", "Wan2.2_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth",
                 "v1-16.pth", "best_netG.pt", "umt5-xxl"):
        assert name in err
    assert "ovi-download" in err


def test_malformed_prompt_rejected_before_loading(capsys) -> None:
    assert main(["--config", TINY, "--prompt", "He says <S>hi"]) == 2
    assert "<S>" in capsys.readouterr().err


def test_prompts_file_and_bad_image(tmp_path: Path) -> None:
    (tmp_path / "p.tsv").write_text("prompt\timage\nA cat. Audio: purr\t\nA dog. Audio: bark\tmissing.png\n")
    cfg = load_config(InferenceConfig, TINY, FAST + [f"prompts_file={tmp_path / 'p.tsv'}", f"output_dir={tmp_path}"])
    with pytest.raises(InvalidRequest, match="exactly one"):  # the preset also has a prompt
        read_jobs(cfg)
    cfg.prompt = ""
    jobs = read_jobs(cfg)
    assert [(j.prompt, j.image) for j in jobs] == [("A cat. Audio: purr", None),
                                                   ("A dog. Audio: bark", str(tmp_path / "missing.png"))]
    with pytest.raises(InvalidRequest, match="p.tsv line 3: image not found"):
        check_request(cfg, jobs)


def test_config_typo_is_an_error() -> None:
    with pytest.raises(ValueError, match="num_stpes"):
        load_config(InferenceConfig, TINY, ["num_stpes=3"])


def test_random_components_are_seeded_and_leave_global_rng_alone() -> None:
    from ovi.components import random_components
    from ovi.config import load_fusion_config

    cfg = load_fusion_config(REPO / "configs/model/tiny.yaml")
    state = torch.random.get_rng_state()
    a, b = random_components(cfg, seed=3), random_components(cfg, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    key = "video_model.blocks.0.self_attn.q.weight"
    assert torch.equal(a.model.state_dict()[key], b.model.state_dict()[key])


def test_a_trained_export_says_how_to_sample_it(tmp_path: Path) -> None:
    """An export's TrainingMetadata (model config, clip length, prompt spelling) beats the preset's values."""
    from ovi.checkpoints import TrainingMetadata, save_fusion_checkpoint
    from ovi.config import load_fusion_config, to_yaml
    from ovi.models.fusion import FusionModel

    model_cfg = load_fusion_config(REPO / "configs/model/tiny.yaml")
    meta = TrainingMetadata(stage="fusion", model_config=to_yaml(model_cfg), num_frames=121, prompt_style="audcap")
    path = save_fusion_checkpoint(FusionModel(model_cfg), tmp_path / "export.safetensors", metadata=meta)
    cfg = load_config(InferenceConfig, REPO / "configs/inference/960x960_10s.yaml", [f"checkpoints.fusion={path}"])
    new_cfg, got_model_cfg, style = apply_training_metadata(cfg)
    assert (cfg.num_frames, new_cfg.num_frames, new_cfg.geometry.audio_latents) == (241, 121, 157)
    assert got_model_cfg == model_cfg and style == "audcap"
    released = save_fusion_checkpoint(FusionModel(model_cfg), tmp_path / "plain.safetensors")  # no metadata
    same_cfg, _, style = apply_training_metadata(load_config(InferenceConfig, REPO / "configs/inference/960x960_10s.yaml",
                                                             [f"checkpoints.fusion={released}"]))
    assert same_cfg.num_frames == 241 and style is None


def test_outputs_record_how_they_were_made_and_are_never_silently_replaced(tmp_path: Path) -> None:
    import json

    import av

    out = tmp_path / "out"
    args = ["--config", "tiny_cpu", "--prompt", "A dog barks. Audio: barking", *FAST, f"output_dir={out}",
            "seed=7", "slg_layer=-1"]
    assert main(args) == 0
    assert main(args) == 0  # same name taken: a second file, not an overwrite
    mp4s = sorted(out.glob("*.mp4"))
    assert [p.name for p in mp4s] == ["000_A_dog_barks_Audio_barking_seed7-2.mp4", "000_A_dog_barks_Audio_barking_seed7.mp4"]
    sidecar = json.loads(mp4s[1].with_suffix(".json").read_text())
    assert (sidecar["prompt"], sidecar["seed"], sidecar["variant"]) == ("A dog barks. Audio: barking", 7, "960x960_5s")
    assert sidecar["settings"]["slg_layer"] == -1 and sidecar["settings"]["num_steps"] == 2
    with av.open(str(mp4s[1])) as container:
        assert container.metadata["title"] == "A dog barks. Audio: barking"
        assert json.loads(container.metadata["comment"]) == sidecar
    stamp = mp4s[1].stat().st_mtime_ns
    assert main([*args, "--skip-existing"]) == 0  # resume: nothing new
    assert len(list(out.glob("*.mp4"))) == 2 and mp4s[1].stat().st_mtime_ns == stamp
    assert main([*args, "--overwrite"]) == 0
    assert len(list(out.glob("*.mp4"))) == 2 and mp4s[1].stat().st_mtime_ns != stamp


def test_per_call_settings_images_and_seeds() -> None:
    cfg = load_config(InferenceConfig, TINY, FAST)
    pipe = OviPipeline.from_config(cfg)
    prompt = "A dog barks. Audio: barking"
    a = pipe.generate(prompt, seed=1, progress=False, num_steps=1, height=64, width=128, slg_layer=-1)
    assert a.video.shape[2:] == (32, 96) and a.settings["num_steps"] == 1  # 64x128 scaled to the 64x64 area
    r = pipe.generate(prompt, seed=-1, progress=False, num_steps=1)
    assert r.seed >= 0 and r.settings["num_steps"] == 1
    frame = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    from_array = pipe.generate(prompt, image=frame, seed=2, progress=False, num_steps=1)
    from_pil = pipe.generate(prompt, image=Image.fromarray(frame), seed=2, progress=False, num_steps=1)
    assert torch.equal(from_array.video, from_pil.video)
    for bad, match in [(dict(seed=1.5), "seed must be an integer"), (dict(seed=2**70), "seed="),
                       (dict(num_steps=0), "num_steps=0"), (dict(bogus=1), "unknown settings")]:
        with pytest.raises(InvalidRequest, match=match):
            pipe.generate(prompt, progress=False, **bad)
