"""The paper's "diagonal" figure at toy scale: how much of the audio tower's cross-modal attention lands on the
video tokens of the same moment.

    python -m ovi.toy.attention --release runs/toy/release/fusion --clips runs/toy/eval_world --out A.json [--png A.png]

For held-out clips (encoded with the release's codecs, noised to sigma 0.5, their captions as text), every audio
latent (32 ms) is time-aligned with the video latent frame covering its moment (frame 0 alone, then 4 frames
per latent frame: 167 ms); the *aligned mass* is the share of its cross-modal attention (softmax over all
video tokens, averaged over heads, blocks and clips) on video latent frames within +-1 of the aligned one.
Uniform attention gives 3/31 = 0.097. The queries/keys are recomputed from each block's own inputs, exactly as
``CrossAttention.forward`` forms them (RoPE included).
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
from pathlib import Path

import numpy as np
import torch

from ovi.geometry import AUDIO_SAMPLES_PER_LATENT, FPS, SAMPLE_RATE, VAE_TEMPORAL_FACTOR
from ovi.models.rope import apply_rotary
from ovi.models.stream import Stream
from ovi.models.tower import CrossAttention

SIGMA = 0.5
WINDOW = 1  # latent frames either side of the aligned one


def aligned_latent_frame(num_audio: int, num_latent_frames: int) -> np.ndarray:
    """Video latent frame holding the moment of each audio latent's centre: [num_audio] ints."""
    t_s = (np.arange(num_audio) + 0.5) * AUDIO_SAMPLES_PER_LATENT / SAMPLE_RATE
    frame = np.floor(t_s * FPS)  # the video frame shown at that moment
    return np.clip(np.ceil(frame / VAE_TEMPORAL_FACTOR), 0, num_latent_frames - 1).astype(int)


class _Recorder:
    """Captures audio->video attention probabilities [B, H, L_audio, L_video] of each audio block."""

    def __init__(self, blocks: list[CrossAttention]):
        self.maps: list[torch.Tensor] = []
        self.sig = inspect.signature(CrossAttention.forward)
        self.handles = [b.register_forward_pre_hook(self._hook, with_kwargs=True) for b in blocks]

    def _hook(self, module: CrossAttention, args: tuple, kwargs: dict) -> None:
        a = self.sig.bind(module, *args, **kwargs).arguments
        target, x, rope = a["target"], a["x"], a["rope"]
        q = apply_rotary(module.heads(module.norm_q(module.q(x))), rope)  # [B, La, H, D]
        t = module.pre_attn_norm_fusion(target.x)
        k = apply_rotary(module.heads(module.norm_k_fusion(module.k_fusion(t))), target.rope)  # [B, Lv, H, D]
        scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) / math.sqrt(q.shape[-1])
        self.maps.append(scores.softmax(-1))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def attention_map(release: Path, clips: Path, limit: int = 8) -> np.ndarray:
    """Mean audio->video attention over clips, blocks and heads, per video latent frame: [L_audio, F]."""
    from ovi.pipeline import OviPipeline
    from ovi.toy.codecs import _to_pixels, load_world
    from ovi.toy.evaluate import toy_config
    from ovi.toy.sidecar import read_sidecar

    pipe = OviPipeline.from_config(toy_config(release))
    c = pipe.c
    frames, audio = load_world(clips, limit)
    captions = [read_sidecar(v)["caption"] for v in sorted(clips.glob("*.mp4"))[:limit]]
    model = c.model.eval()
    rec = _Recorder([b.cross_attn for b in model.audio_model.blocks])
    gen = torch.Generator().manual_seed(0)
    total = None
    try:
        for f, a, cap in zip(frames, audio, captions):
            v = c.video_vae.encode(_to_pixels(f)[None])[0]  # [48, F, h, w]
            z = c.audio_codec.encode(a[None])[0].T  # [L, 20]
            text = c.text_encoder.encode([cap])[0]
            noisy = [(1 - SIGMA) * x + SIGMA * torch.randn(x.shape, generator=gen) for x in (v, z)]
            t = torch.tensor([1000.0 * SIGMA])
            rec.maps.clear()
            model(Stream([noisy[0]], t, [text]), Stream([noisy[1]], t, [text]))
            probs = torch.stack(rec.maps).mean((0, 2))[0]  # [La, Lv]
            num_f = v.shape[1]
            per_frame = probs.reshape(probs.shape[0], num_f, -1).sum(-1)  # video tokens run frame by frame
            total = per_frame if total is None else total + per_frame
    finally:
        rec.close()
    return (total / len(frames)).numpy()


def aligned_mass(att: np.ndarray) -> float:
    """Share of attention within +-WINDOW latent frames of the aligned one, averaged over audio latents."""
    la, num_f = att.shape
    aligned = aligned_latent_frame(la, num_f)
    near = np.abs(np.arange(num_f)[None, :] - aligned[:, None]) <= WINDOW  # [La, F]
    return float((att * near).sum(1).mean())


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
    p.add_argument("--release", type=Path, nargs="+", required=True, help="model folder(s); name=folder to label")
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
