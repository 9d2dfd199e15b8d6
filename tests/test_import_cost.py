"""What a process imports before it works: diffusers costs ~5-7 s on 2 cores, paid by every rank of every
train.cli launch that imports it. The trainer on precomputed latents and the toy release's codecs (what
precompute and on-the-fly training load) need none of it; the release's VAEs import it where they are built."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import torch
import train.cli, train.trainer
from train.config import load_train_config
from train.encoders import build_encoders

after_trainer = "diffusers" in sys.modules
cfg = load_train_config("configs/train/toy_fusion.yaml", [])
enc = build_encoders(cfg.encoders, need_video=True, device=torch.device("cpu"))
video = enc.video.encode(torch.zeros(1, 3, 5, 64, 64))  # [B, 48, 2, 4, 4]
audio = enc.audio.encode(torch.zeros(1, 1024))          # [B, 80, 2]: the toy's pooled mel
after_codecs = "diffusers" in sys.modules
import ovi.codecs.audio_vae  # the control: the release's MMAudio VAE is a diffusers class
print(json.dumps({"after_trainer": after_trainer, "after_codecs": after_codecs,
                  "after_release_vae": "diffusers" in sys.modules,
                  "video": list(video.shape), "audio": list(audio.shape)}))
"""


def test_the_trainer_and_the_toy_codecs_load_without_diffusers():
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["video"] == [1, 48, 2, 4, 4] and out["audio"] == [1, 80, 2]  # the codecs really ran
    assert not out["after_trainer"] and not out["after_codecs"], out
    assert out["after_release_vae"]  # the probe does see diffusers arrive

