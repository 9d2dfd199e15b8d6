"""`torchrun --nproc_per_node 2 -m ovi.cli.generate ... sp_size=2`: one clip over 2 processes writes each output
once, with the same audio as one process (tiny random weights on CPU; the latents' equality at the exact-math tier
is tests/test_parallel_ulysses.py's)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


def _generate(out: Path, prompts: Path, nproc: int, *overrides: str) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)] if nproc else [sys.executable]
    cmd = [*launcher, "-m", "ovi.cli.generate", "--config", "tiny_cpu", "--prompts-file", str(prompts),
           f"output_dir={out}", "save_wav=true", "num_steps=3", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, timeout=600)


def test_two_processes_one_clip_each_output_written_once(tmp_path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt\nA cat. Audio: purr\nA dog. Audio: bark\n")
    _generate(tmp_path / "one", prompts, 0)
    _generate(tmp_path / "sp", prompts, 2, "sp_size=2")
    one, sp = sorted((tmp_path / "one").glob("*.wav")), sorted((tmp_path / "sp").glob("*.wav"))
    assert [p.name for p in sp] == [p.name for p in one] and len(one) == 2  # once each, no "-2" duplicates
    assert len(list((tmp_path / "sp").glob("*.mp4"))) == 2
    for a, b in zip(one, sp):
        wa, wb = sf.read(a)[0], sf.read(b)[0]
        assert np.linalg.norm(wa - wb) <= 1e-4 * np.linalg.norm(wa)
