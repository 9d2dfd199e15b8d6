"""Train the toy's codecs on the world's clips and write them in the release's file formats.

    python -m ovi.toy.codecs --clips runs/toy/world --out checkpoints/toy [--video-steps N --audio-steps N]

Writes (what ``ovi.components.toy_components`` and ``train.precompute`` read):
    {out}/vae/            Wan2.2 VAE (diffusers ``AutoencoderKLWan``, widths 1/20 of the release) with the toy's
                          own latents_mean / latents_std in its config (the release's are for real video)
    {out}/v1-16.pth       MMAudio mel VAE (release layout: raw weights before EDM2 normalisation, data_mean/std)
    {out}/text_encoder/   a tiny frozen random UMT5 encoder (transformers folder); {out}/tokenizer/ the char tokenizer
    The vocoder is Griffin-Lim (``ovi.toy.vocoder``): no file.

Recipe (documented in the README, "The toy world"): the video VAE learns on random 5-frame windows (one causal
chunk after the first frame) with L1 + MSE on pixels and a 1e-6 KL; the audio VAE on random 2 s mel windows with
L1 on the normalised mel and EDM2's forced weight normalisation applied in every forward (as MMAudio trains it).
Both use AdamW, lr 2e-3 with a cosine decay.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from diffusers.models.autoencoders.autoencoder_mmaudio import MMAudioMPConv1d, normalize

from ovi.codecs.audio_vae import AudioVAE
from ovi.codecs.mel import MelFrontEnd
from ovi.codecs.text_encoder import build_umt5_encoder
from ovi.codecs.video_vae import build_wan22_vae
from ovi.components import TINY_TEXT_ENCODER, char_tokenizer
from ovi.fileio import atomic_path
from ovi.media import read_audio, read_video
from ovi.toy.clip import SAMPLE_RATE

VIDEO_VAE_WIDTHS = {"base_dim": 8, "decoder_base_dim": 8}
AUDIO_VAE_HIDDEN = 16
TEXT_DIM = 64  # d_model of the toy UMT5 = text_dim of configs/model/toy.yaml
VIDEO_WINDOW = 5  # frames per training window: the first frame plus one causal chunk of 4
AUDIO_WINDOW_MELS = 126  # ~2 s of mel frames (even: the VAE halves time)
KL_WEIGHT = 1e-6
LR = 2e-3


def load_world(folder: Path, limit: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every mp4 of a world folder -> (frames uint8 [T, 3, H, W], audio float32 [N]) lists."""
    videos = sorted(Path(folder).glob("*.mp4"))[:limit]
    if not videos:
        raise FileNotFoundError(f"no .mp4 clips in {folder}; make them with: ovi-toy make --out {folder} --num 200")
    frames = [torch.from_numpy(read_video(v)[0]).permute(0, 3, 1, 2).contiguous() for v in videos]
    audio = [torch.from_numpy(read_audio(v, SAMPLE_RATE)) for v in videos]
    return frames, audio


def _to_pixels(frames_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [T, 3, H, W] -> [3, T, H, W] in [-1, 1]."""
    return frames_u8.permute(1, 0, 2, 3).float() / 127.5 - 1.0


def _cosine(step: int, total: int) -> float:
    return LR * 0.5 * (1 + math.cos(math.pi * step / total))


def train_video_vae(clips: list[torch.Tensor], steps: int, batch: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vae = build_wan22_vae(VIDEO_VAE_WIDTHS).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=LR, weight_decay=0.0)
    for step in (bar := tqdm(range(steps), desc="video VAE", unit="step")):
        picks = rng.integers(len(clips), size=batch)
        x = torch.stack([_to_pixels(clips[i][(s := rng.integers(clips[i].shape[0] - VIDEO_WINDOW + 1)):
                                             s + VIDEO_WINDOW]) for i in picks])  # [B, 3, 5, H, W]
        post = vae.encode(x).latent_dist
        y = vae.decode(post.sample()).sample
        loss = (y - x).abs().mean() + F.mse_loss(y, x) + KL_WEIGHT * post.kl().mean()
        for g in opt.param_groups:
            g["lr"] = _cosine(step, steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def set_latent_stats(vae: nn.Module, clips: list[torch.Tensor]) -> None:
    """Per-channel mean / std of the posterior means over whole clips: the DiT sees unit-variance latents."""
    mus = [vae.encode(_to_pixels(c)[None]).latent_dist.mean for c in clips]  # [1, 48, F, h, w] each
    flat = torch.cat([m.transpose(0, 1).reshape(m.shape[1], -1) for m in mus], dim=1)  # [48, n]
    vae.register_to_config(latents_mean=flat.mean(1).tolist(), latents_std=flat.std(1).clamp(min=1e-4).tolist())


class _ForcedWeightNorm(nn.Module):
    """EDM2's forced weight normalisation, applied in the forward while training (what load-time
    ``AudioVAE.normalize_weights`` does once to the raw weights stored in the file)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # [O, I, K]
        return normalize(w, dim=[1, 2]) / math.sqrt(w[0].numel())


def _conv_modules(vae: AudioVAE) -> list[nn.Conv1d]:
    return [m for m in vae.modules() if isinstance(m, MMAudioMPConv1d)]


def train_audio_vae(audio: list[torch.Tensor], steps: int, batch: int = 8, seed: int = 0) -> AudioVAE:
    """Returns the VAE holding *raw* weights (the file's content); normalise before use."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    front = MelFrontEnd()
    mels = [front(a[None])[0] for a in audio]  # [80, T] each
    every = torch.cat(mels, dim=1)
    vae = AudioVAE(hidden_dim=AUDIO_VAE_HIDDEN)
    vae.data_mean.copy_(every.mean(1)[None, :, None])
    vae.data_std.copy_(every.std(1).clamp(min=1e-3)[None, :, None])
    convs = _conv_modules(vae)
    for m in convs:
        parametrize.register_parametrization(m, "weight", _ForcedWeightNorm())
    vae.weights_normalized = True  # the parametrisation normalises on the fly
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    for step in (bar := tqdm(range(steps), desc="audio VAE", unit="step")):
        picks = rng.integers(len(mels), size=batch)
        x = torch.stack([mels[i][:, (s := rng.integers(mels[i].shape[1] - AUDIO_WINDOW_MELS + 1)):
                                 s + AUDIO_WINDOW_MELS] for i in picks])  # [B, 80, W]
        y = vae.decode(vae.encode(x))
        loss = ((y - x) / vae.data_std).abs().mean()
        for g in opt.param_groups:
            g["lr"] = _cosine(step, steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    for m in convs:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)  # keep the raw weights
    vae.weights_normalized = False
    return vae.eval().requires_grad_(False)


def save_text_encoder(out: Path, seed: int = 0) -> None:
    """A frozen random tiny UMT5 (char tokenizer): fixed features the DiT learns to read."""
    tokenizer = char_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = build_umt5_encoder(TINY_TEXT_ENCODER | {"d_model": TEXT_DIM, "vocab_size": len(tokenizer)})
    encoder.save_pretrained(out / "text_encoder")
    tokenizer.save_pretrained(out / "tokenizer")


def save_audio_vae(vae: AudioVAE, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save({k: v.contiguous() for k, v in vae.state_dict().items()}, tmp)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=Path, required=True, help="a world folder (ovi-toy make)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--video-steps", type=int, default=1500)
    p.add_argument("--audio-steps", type=int, default=1500)
    p.add_argument("--max-clips", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    frames, audio = load_world(a.clips, a.max_clips)
    done = a.out / "codecs_done.json"
    if not (a.out / "text_encoder" / "config.json").exists():
        save_text_encoder(a.out, a.seed)
    if not (a.out / "v1-16.pth").exists():
        save_audio_vae(train_audio_vae(audio, a.audio_steps, seed=a.seed), a.out / "v1-16.pth")
    if not (a.out / "vae" / "config.json").exists():
        vae = train_video_vae(frames, a.video_steps, seed=a.seed)
        set_latent_stats(vae, frames[:32])
        vae.save_pretrained(a.out / "vae")
    done.write_text(json.dumps({"video_steps": a.video_steps, "audio_steps": a.audio_steps,
                                "clips": len(frames)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
