"""``ovi-toy rebuild``: the whole toy recipe with the project's real tools, one phase after another, resumable.

    world (ovi-toy make) -> shards (ovi-data: audio-video, and audio-only for stage 1) -> codecs (ovi.toy.codecs)
    -> latents (train.precompute) -> stage 1 (train.cli: toy_audio_pretrain, then toy_audio_finetune)
    -> stage 2 (ovi.toy.init_fusion, train.cli: toy_fusion) -> release folder (checkpoints/toy's layout)
    -> stage 3 (train.cli: toy_v2a, the audio tower V2A-tuned; train.export --only 'audio_model.*': the release's
       v2a.safetensors, the weights that make sound from a clean video)
    [--ablations: the unfused baseline and the audio RoPE scale 1.0 run of stage 2, each to its own release folder]

Every phase is a subprocess running the project's own CLI, so the recipe is exactly what a user would type;
each tool resumes on its own (clips, shards, latent shards and trainer checkpoints are written atomically) and a
phase whose outputs are complete is skipped, so a killed rebuild continues where it stopped.
``--quick`` runs the same chain on a handful of clips and a few steps (CI: minutes).
``--fusion-steps N`` lengthens stage 2 alone: the longer-trained video tower the 90 minutes leave out.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from ovi.config import load_fusion_config, to_yaml
from ovi.toy.fixed_codecs import BASES
from ovi.toy.layout import AUDIO_CODEC_FILE, MODEL_CONFIG, V2A_WEIGHTS_FILE, VIDEO_CODEC_FILE
from ovi.toy.world import clip_plan

TRAIN_CONFIGS = {s: f"configs/train/toy_{s}.yaml" for s in ("audio_pretrain", "audio_finetune", "fusion", "v2a")}
VOCODER_FILE = {"vocoder": "griffin_lim", "iters": 32}  # the shipped checkpoints/toy/griffin_lim.json


@dataclass(frozen=True)
class Budget:
    """Sizes of one rebuild. FULL fits 90 minutes on an idle 2-core machine; QUICK is the CI smoke run."""

    clips: int
    pretrain_steps: int
    finetune_steps: int
    fusion_steps: int
    fusion_batch: int
    v2a_steps: int


FULL = Budget(clips=200, pretrain_steps=1000, finetune_steps=300, fusion_steps=5000, fusion_batch=8, v2a_steps=2500)
QUICK = Budget(clips=8, pretrain_steps=2, finetune_steps=2, fusion_steps=2, fusion_batch=2, v2a_steps=2)


def _run(cmd: list[str], log: Path) -> None:
    """Run one tool; its output goes to the phase log (and the terminal's tail on failure)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"phase failed ({proc.returncode}): {' '.join(cmd)}\n--- {log} (tail) ---\n{tail}")


def _py(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class Rebuild:
    def __init__(self, out: Path, budget: Budget, seed: int = 0, video_basis: str = "pixels"):
        self.out, self.b, self.seed, self.video_basis = out, budget, seed, video_basis
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.codecs = out / "codecs"

    def _encoders(self, video: bool) -> list[str]:
        c = self.codecs
        over = [f"encoders.audio_vae={c / AUDIO_CODEC_FILE}", f"encoders.text_encoder={c / 'text_encoder'}",
                f"encoders.tokenizer={c / 'tokenizer'}"]
        return over + ([f"encoders.video_vae={c / VIDEO_CODEC_FILE}"] if video else [])

    # -- phases ---------------------------------------------------------------------------------
    def world(self) -> None:
        _run(_py("ovi.toy.cli", "make", "--out", str(self.out / "world"), "--num", str(self.b.clips),
                 "--seed", str(self.seed)), self.logs / "world.log")

    def shards(self) -> None:
        data = [*_py("data_pipeline.cli", "run", "--config", "configs/data/toy.yaml", "--input", str(self.out / "world"))]
        _run([*data, "--output", str(self.out / "shards_av")], self.logs / "shards.log")
        _run([*data, "--output", str(self.out / "shards_audio"), "mode=audio", "audio_split.purpose=finetune",
              "pack.shard_prefix=toy-audio"], self.logs / "shards.log")

    def codecs_phase(self) -> None:
        _run(_py("ovi.toy.codecs", "--clips", str(self.out / "world"), "--out", str(self.codecs),
                 "--seed", str(self.seed), "--video-basis", self.video_basis), self.logs / "codecs.log")
        (self.codecs / "griffin_lim.json").write_text(json.dumps(VOCODER_FILE) + "\n")

    def latents(self) -> None:
        for stage, src in (("audio_pretrain", "shards_audio"), ("audio_finetune", "shards_audio"), ("fusion", "shards_av")):
            _run(_py("train.precompute", "--config", TRAIN_CONFIGS[stage], "--input", str(self.out / src),
                     "--out", str(self.out / "latents" / stage), "--store-dtype", "fp32",
                     *self._encoders(stage == "fusion")), self.logs / "latents.log")

    def _train(self, stage: str, run: str, steps: int, *extra: str, latents: str = "") -> Path:
        """``latents``: the precomputed set it reads (default: the stage's own)."""
        run_dir = self.out / run
        _run(_py("train.cli", "--config", TRAIN_CONFIGS[stage], f"run_dir={run_dir}", f"max_steps={steps}",
                 f"data.shards=[{self.out / 'latents' / (latents or stage)}]", *extra), self.logs / f"{run}.log")
        return run_dir / "export" / f"{stage}.safetensors"

    def stage1(self) -> None:
        pre = self._train("audio_pretrain", "audio_pretrain", self.b.pretrain_steps)
        self._train("audio_finetune", "audio_finetune", self.b.finetune_steps, f"init.audio_tower={pre}")

    def stage2(self, name: str = "fusion", unfused: bool = False, rope_scale: float | None = None) -> None:
        """One stage-2 run: the shipped recipe, the unfused baseline, or another audio RoPE scale."""
        model = MODEL_CONFIG
        if rope_scale is not None:
            cfg = load_fusion_config(MODEL_CONFIG)
            cfg = replace(cfg, audio=replace(cfg.audio, rope_temporal_scale=rope_scale))
            model = str(self.out / f"model_{name}.yaml")
            Path(model).write_text(to_yaml(cfg))
        init = self.out / f"{name}_init.safetensors"
        audio = self.out / "audio_finetune" / "export" / "audio_finetune.safetensors"
        _run(_py("ovi.toy.init_fusion", "--model", model, "--audio-tower", str(audio), "--out", str(init),
                 "--seed", str(self.seed), *(["--unfused"] if unfused else [])), self.logs / f"{name}.log")
        # In-loop evaluation samples with this rebuild's codecs (checkpoints/toy may hold another world's).
        extra = [f"model={model}", f"init.fusion={init}", f"data.batch_size={self.b.fusion_batch}",
                 f"evaluation.inference_overrides=[checkpoints.root={self.codecs.resolve()}]"]
        if unfused:
            extra.append("frozen=['*_fusion*']")  # the zeroed cross-modal layers stay zero: no audio-video exchange
        export = self._train("fusion", name, self.b.fusion_steps, *extra)
        self.release(export, self.out / "release" / name)

    def stage3(self) -> None:
        """The audio tower V2A-tuned from stage 2; its tensors alone become the release's V2A weights."""
        fusion = self.out / "fusion" / "export" / "fusion.safetensors"
        self._train("v2a", "v2a", self.b.v2a_steps, f"init.fusion={fusion}", f"data.batch_size={self.b.fusion_batch}",
                    latents="fusion")
        _run(_py("train.export", str(self.out / "v2a" / "checkpoints"), "--ema", "--dtype", "fp32",
                 "--only", "audio_model.*", "--out", str(self.out / "release" / "fusion" / V2A_WEIGHTS_FILE)),
             self.logs / "v2a.log")

    def release(self, fusion: Path, dest: Path) -> None:
        """checkpoints/toy's layout: fusion.safetensors, the two codec files, text_encoder/, tokenizer/,
        griffin_lim.json."""
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(fusion, dest / "fusion.safetensors")
        for name in ("text_encoder", "tokenizer"):
            shutil.copytree(self.codecs / name, dest / name, dirs_exist_ok=True)
        for name in (VIDEO_CODEC_FILE, AUDIO_CODEC_FILE, "griffin_lim.json"):
            shutil.copy2(self.codecs / name, dest / name)

    # -- driver ---------------------------------------------------------------------------------
    def phases(self, ablations: bool) -> list[tuple[str, Callable[[], None], Path]]:
        """(name, run, the file whose presence means the phase is complete)."""
        rel = self.out / "release"
        plan = [
            ("world", self.world, self.out / "world" / f"{clip_plan(self.b.clips, self.seed)[-1][0]}.json"),
            ("shards", self.shards, self.out / "shards_audio" / "shards" / "index.json"),
            ("codecs", self.codecs_phase, self.codecs / "griffin_lim.json"),  # written last
            ("latents", self.latents, self.out / "latents" / "fusion" / "shards" / "index.json"),
            ("stage 1", self.stage1, self.out / "audio_finetune" / "export" / "audio_finetune.safetensors"),
            ("stage 2", self.stage2, rel / "fusion" / "fusion.safetensors"),
            ("stage 3", self.stage3, rel / "fusion" / V2A_WEIGHTS_FILE),
        ]
        if ablations:
            plan += [("stage 2 unfused", lambda: self.stage2("unfused", unfused=True), rel / "unfused" / "fusion.safetensors"),
                     ("stage 2 rope 1.0", lambda: self.stage2("rope1", rope_scale=1.0), rel / "rope1" / "fusion.safetensors")]
        return plan

    def run(self, ablations: bool = False) -> dict[str, float]:
        times_file = self.out / "phase_times.json"
        times = json.loads(times_file.read_text()) if times_file.exists() else {}
        plan = self.phases(ablations)
        for name, fn, done in (bar := tqdm(plan, desc="ovi-toy rebuild", unit="phase")):
            bar.set_postfix_str(name)
            if done.exists():
                continue
            t0 = time.time()
            fn()
            times[name] = times.get(name, 0.0) + time.time() - t0
            times_file.write_text(json.dumps(times, indent=1) + "\n")
        return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ovi-toy rebuild", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/toy"))
    p.add_argument("--quick", action="store_true", help="a few clips and steps: the CI smoke run (minutes)")
    p.add_argument("--ablations", action="store_true", help="also the unfused baseline and the RoPE 1.0 run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--video-basis", choices=BASES, default="pixels",
                   help="the pixel codec's basis (ovi.toy.fixed_codecs); haar_time weighs motion more in the loss")
    p.add_argument("--fusion-steps", type=_positive, metavar="N",
                   help=f"stage 2's steps (default {FULL.fusion_steps}, {QUICK.fusion_steps} with --quick): a longer-"
                        "trained video tower, the route past the 90-minute budget (hours on 2 cores)")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of steps >= 1, got {text!r}")
    return int(text)


def run_from_args(a: argparse.Namespace) -> int:
    budget = QUICK if a.quick else FULL
    if a.fusion_steps:
        budget = replace(budget, fusion_steps=a.fusion_steps)
    times = Rebuild(a.out, budget, a.seed, a.video_basis).run(a.ablations)
    print("phase times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"release folder(s) in {a.out / 'release'}; ship one with: cp -r {a.out / 'release' / 'fusion'}/* checkpoints/toy/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
