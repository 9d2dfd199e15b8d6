"""The paper's "diagonal" figure at toy scale: how much of the audio tower's cross-modal attention lands on the
video tokens of the same moment.

    python -m ovi.toy.attention --release runs/toy/release/fusion --clips runs/toy/eval_world --out A.json [--png A.png]

For held-out clips (encoded with the release's codecs, noised to sigma 0.5, their captions as text), every audio
latent (32 ms) is time-aligned with the video latent frame covering its moment (frame 0 alone, then 4 frames
per latent frame: 167 ms); the *aligned mass* is the share of its cross-modal attention (softmax over all
video tokens, averaged over heads, blocks and clips) on video latent frames within +-1 of the aligned one.
Uniform attention gives 3/31 = 0.097. The probabilities are recomputed from each block's own inputs by
``ovi.eval.clip_attention`` (the ``ovi-eval attention`` probe), exactly as ``CrossAttention.forward`` forms them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ovi.eval.clip_attention import WINDOW, aligned_latent_frame, aligned_mass, clip_attention

SIGMA = 0.5


def attention_map(release: Path, clips: Path, limit: int = 8) -> np.ndarray:
    """Mean audio->video attention over clips, blocks and heads, per video latent frame: [L_audio, F]."""
    from ovi.media import read_audio, read_video
    from ovi.pipeline import OviPipeline
    from ovi.toy.clip import SAMPLE_RATE
    from ovi.toy.evaluate import toy_config
    from ovi.toy.sidecar import read_sidecar

    pipe = OviPipeline.from_config(toy_config(release))
    videos = sorted(Path(clips).glob("*.mp4"))[:limit]
    if not videos:
        raise FileNotFoundError(f"no .mp4 clips in {clips}; make them with: ovi-toy make --out {clips}")
    total = None
    for i, video in enumerate(videos):
        att = clip_attention(pipe.c, read_video(video)[0], read_audio(video, SAMPLE_RATE),
                             read_sidecar(video)["caption"], SIGMA, seed=i).audio_to_video_time()
        total = att if total is None else total + att
    return total / len(videos)


def plot(maps: dict[str, np.ndarray], masses: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 3.6))
    for ax, (name, att) in zip(np.atleast_1d(axes), maps.items()):
        ax.imshow(att.T, aspect="auto", origin="lower", cmap="viridis")
        la, num_f = att.shape
        ax.plot(np.arange(la), aligned_latent_frame(la, num_f), "w--", lw=0.8)
        ax.set_title(f"{name}: aligned mass {masses[name]:.3f}")
        ax.set_xlabel("audio latent (32 ms)")
        ax.set_ylabel("video latent frame (167 ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", type=Path, nargs="+", required=True, help="model folder(s), each labelled by its folder name")
    p.add_argument("--clips", type=Path, required=True)
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--out", type=Path, required=True, help="JSON of aligned masses")
    p.add_argument("--png", type=Path)
    a = p.parse_args(argv)
    maps, masses = {}, {}
    for r in a.release:
        maps[r.name] = attention_map(r, a.clips, a.limit)
        masses[r.name] = aligned_mass(maps[r.name])
    masses["uniform"] = (2 * WINDOW + 1) / next(iter(maps.values())).shape[1]
    a.out.write_text(json.dumps(masses, indent=1) + "\n")
    print(json.dumps(masses, indent=1))
    if a.png:
        plot(maps, masses, a.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
