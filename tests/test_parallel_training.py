"""Sequence-parallel training (engine.sp_size=2 on 2 gloo processes, DeepSpeed ZeRO-2, fp32) against one
process: the same losses and the same trained weights (so the same gradients went into AdamW), each data slot
read once by the SP group; the SP run's checkpoint resumed without SP (checkpoints do not depend on SP)."""
from __future__ import annotations

import pytest
import torch

from safetensors.torch import save_file
from test_train_distributed import TINY, TINY_AV, Z2, ok, torchrun  # the same harness

from ovi.config import load_fusion_config
from ovi.models.fusion import init_tower_weights
from ovi.models.tower import Tower
from train.precompute import main as precompute_main
from train.synthetic import write_dataset

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


@pytest.fixture(scope="module")
def av_latents(tmp_path_factory: pytest.TempPathFactory):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path_factory.mktemp("sp_data")
    av = write_dataset(root / "av", 4, 2, video=True, seconds=1.0)
    precompute_main(["--config", str(repo / "configs/train/fusion.yaml"), "--input", str(av), "--out",
                     str(root / "av_lat"), "--store-dtype", "fp32", "encoders.kind=random", *TINY_AV])
    torch.manual_seed(11)
    towers = {}
    for side in ("video", "audio"):  # pretrained towers as released: no cross-modal layers, non-zero heads
        tower = Tower(getattr(load_fusion_config(TINY), side))
        init_tower_weights(tower)
        torch.nn.init.normal_(tower.head.head.weight, std=0.02)
        towers[side] = root / f"{side}.safetensors"
        save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(towers[side]))
    return root / "av_lat", towers


def test_sp2_training_equals_one_process_and_resumes_without_sp(av_latents, tmp_path):
    shards, towers = av_latents
    common = [Z2, f"init.video_tower={towers['video']}", f"init.audio_tower={towers['audio']}",
              f"data.shards=[{shards}]", *TINY_AV,
              "data.batch_size=1", "engine.gradient_accumulation_steps=2", "checkpoint.every_steps=1"]
    one = ok(torchrun(tmp_path / "one", "fusion", *common, "max_steps=2", nproc=1))
    # Step 1 with SP (one SP group of 2 ranks reads both slots); step 2 resumed on 2 ranks without SP
    # (2 data-parallel groups, accumulation 2 -> 1): the checkpoint does not depend on the SP size.
    sp = ok(torchrun(tmp_path / "sp", "fusion", *common, "max_steps=1", "engine.sp_size=2", nproc=2))
    resumed = ok(torchrun(tmp_path / "sp", "fusion", *common, "max_steps=2", nproc=2))
    for step, run in ((1, sp), (2, resumed)):
        a, b = one.metrics[step]["loss"], run.metrics[step]["loss"]
        assert abs(a - b) <= 1e-5 * abs(a), (step, a, b)
    assert sp.metrics[1]["samples_per_s"] > 0
    wa, wb = one.export("fusion"), resumed.export("fusion")  # AdamW after both steps: the gradients were equal
    num = sum(float((wa[k].double() - wb[k].double()).norm() ** 2) for k in wa) ** 0.5
    den = sum(float(wa[k].double().norm() ** 2) for k in wa) ** 0.5
    assert num <= 1e-5 * den, f"trained weights differ: rel_l2 {num / den:.3g}"
