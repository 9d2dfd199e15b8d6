"""Cross-modal attention of a model on one clip (the paper's Figure 3), and ``ovi-eval attention``.

    ovi-eval attention CLIP.mp4 [--config toy] [--prompt TEXT] [--sigma 0.5] [--blocks 0,2] [--out DIR] [key=value ...]

The clip (a generated one, or any of the model's size) is encoded with the pipeline's codecs, noised to ``sigma``
(a fixed seed) and run once through the fusion model with its prompt (the sidecar's ``prompt`` / ``caption``
unless ``--prompt``); ``ovi.eval.attention`` records each chosen block's cross-modal attention. Writes to ``--out``
(default ``{clip}_attention/``): ``audio_to_video_time.png`` (audio token x video latent frame: RoPE's diagonal),
``video_to_audio_time.png`` (video latent frame x audio token), ``attention_frameNNN.png`` + ``attention.mp4``
(where the audio of each moment looks in the picture, over the frames) and ``attention.json`` (the share of
attention within +-1 latent frame of the time-aligned one, against the uniform share).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ovi.eval.attention import (CrossAttentionMaps, audio_to_video_time, record_cross_attention, render_overlays,
                                render_time_matrix, video_heatmaps)
from ovi.geometry import AUDIO_SAMPLES_PER_LATENT, FPS, SAMPLE_RATE, VAE_TEMPORAL_FACTOR, latent_frames
from ovi.imaging import frames_to_pixels
from ovi.models.stream import Stream

DEFAULT_SIGMA = 0.5
WINDOW = 1  # latent frames either side of the time-aligned one


@dataclass
class ClipAttention:
    maps: CrossAttentionMaps
    grid: tuple[int, int, int]  # video tokens (F, h, w)

    def audio_to_video_time(self) -> np.ndarray:
        """[L_audio, F]: each audio token's attention mass per video latent frame (blocks averaged)."""
        return audio_to_video_time(self.maps.mean("audio_to_video")[0], self.grid)

    def video_to_audio_time(self) -> np.ndarray:
        """[F, L_audio]: each video latent frame's (tokens averaged) attention over the audio tokens."""
        f, h, w = self.grid
        probs = self.maps.mean("video_to_audio")[0]  # [L_video, L_audio]
        return probs[: f * h * w].reshape(f, h * w, -1).mean(1).numpy()

    def heatmaps(self) -> np.ndarray:
        return video_heatmaps(self.maps.mean("audio_to_video")[0], self.grid)


def aligned_latent_frame(num_audio: int, num_latent_frames: int) -> np.ndarray:
    """Video latent frame holding the moment of each audio latent's centre: [num_audio] ints (frame 0 alone,
    then 4 video frames per latent frame, as the causal video VAE packs them)."""
    t_s = (np.arange(num_audio) + 0.5) * AUDIO_SAMPLES_PER_LATENT / SAMPLE_RATE
    frame = np.floor(t_s * FPS)  # the video frame shown at that moment
    return np.clip(np.ceil(frame / VAE_TEMPORAL_FACTOR), 0, num_latent_frames - 1).astype(int)


def aligned_mass(att: np.ndarray) -> float:
    """[L_audio, F] -> share of attention within +-WINDOW latent frames of the aligned one, mean over audio."""
    la, num_f = att.shape
    near = np.abs(np.arange(num_f)[None, :] - aligned_latent_frame(la, num_f)[:, None]) <= WINDOW  # [La, F]
    return float((att * near).sum(1).mean())


@torch.no_grad()
def clip_attention(components, frames: np.ndarray, audio: np.ndarray, prompt: str,  # noqa: ANN001 (Components)
                   sigma: float = DEFAULT_SIGMA, blocks: list[int] | None = None, seed: int = 0) -> ClipAttention:
    """``frames`` uint8 [T, H, W, 3], ``audio`` float [N] at 16 kHz -> the recorded cross-modal attention."""
    c = components
    t = 1 + (latent_frames(len(frames)) - 1) * VAE_TEMPORAL_FACTOR  # the causal VAE's 1 + 4k frames
    video = frames_to_pixels(torch.from_numpy(frames[:t]), None, None)[None]  # [1, 3, T, H, W]
    v = c.video_vae.encode(video)[0].float()  # [z, F, h, w]
    a = c.audio_codec.encode(torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None])[0].T.float()  # [L, C]
    text = c.text_encoder.encode([prompt])[0]
    gen = torch.Generator().manual_seed(seed)
    noisy = [(1 - sigma) * x + sigma * torch.randn(x.shape, generator=gen) for x in (v, a)]
    step = torch.tensor([1000.0 * sigma])
    model = c.model.eval()
    with record_cross_attention(model, blocks) as maps:
        model(Stream([noisy[0]], step, [text]), Stream([noisy[1]], step, [text]))
    return ClipAttention(maps, model.video_model.grid_size(v))


def write_clip_attention(att: ClipAttention, frames: np.ndarray, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    a2v = att.audio_to_video_time()
    render_time_matrix(a2v, out / "audio_to_video_time.png")
    render_time_matrix(att.video_to_audio_time(), out / "video_to_audio_time.png", "video -> audio-time attention")
    render_overlays(frames, att.heatmaps(), out, fps=int(FPS))
    summary = {"aligned_mass": aligned_mass(a2v), "uniform_mass": (2 * WINDOW + 1) / a2v.shape[1],
               "blocks": sorted(att.maps.audio_to_video)}
    (out / "attention.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    from ovi.eval.clips import EvalClip, _from_sidecar
    from ovi.presets import DEFAULT_PRESET, load_inference_config

    p = argparse.ArgumentParser(prog="ovi-eval attention", description=__doc__.split("\n\n")[0])
    p.add_argument("clip", type=Path, help="an mp4 at the model's frame size (e.g. from ovi-generate)")
    p.add_argument("--config", default=DEFAULT_PRESET, help="inference preset name or YAML (the model to probe)")
    p.add_argument("--prompt", help="default: the clip's JSON sidecar (prompt or caption)")
    p.add_argument("--sigma", type=float, default=DEFAULT_SIGMA, help="noise level of the probe, in (0, 1)")
    p.add_argument("--blocks", help="comma list of fusion blocks (default: all, averaged)")
    p.add_argument("--out", type=Path)
    p.add_argument("overrides", nargs="*", help="key=value inference config overrides")
    a = p.parse_intermixed_args(argv)
    if not a.clip.is_file():
        raise SystemExit(f"{a.clip}: no such clip")
    if not 0.0 < a.sigma < 1.0:
        raise SystemExit(f"--sigma must lie in (0, 1), got {a.sigma}")
    clip = EvalClip(a.clip)
    side = a.clip.with_suffix(".json")
    if side.exists():
        _from_sidecar(clip, json.loads(side.read_text()), a.clip.parent)
    prompt = a.prompt if a.prompt is not None else clip.prompt
    if not prompt:
        raise SystemExit(f"no prompt for {a.clip}: give --prompt (no JSON sidecar with a prompt beside it)")
    blocks = [int(b) for b in a.blocks.split(",")] if a.blocks else None
    from ovi.pipeline import OviPipeline  # heavy: after the argument checks

    cfg = load_inference_config(a.config, a.overrides)
    pipe = OviPipeline.from_config(cfg)
    num_blocks = len(pipe.c.model.video_model.blocks)
    if blocks and not all(0 <= b < num_blocks for b in blocks):
        raise SystemExit(f"--blocks {a.blocks}: this model has blocks 0..{num_blocks - 1}")
    frames, _fps = clip.video
    att = clip_attention(pipe.c, frames, clip.audio, prompt, a.sigma, blocks)
    out = a.out or a.clip.with_name(f"{a.clip.stem}_attention")
    summary = write_clip_attention(att, frames, out)
    print(f"aligned attention mass {summary['aligned_mass']:.3f} (uniform {summary['uniform_mass']:.3f}); "
          f"plots in {out}/")
    return 0
