"""Train the toy's codecs on the world's clips and write them in the release's file formats.

    python -m ovi.toy.codecs --clips runs/toy/world --out checkpoints/toy [--video-steps N --audio-steps N]

Writes (what ``ovi.components.load_components`` with configs/inference/toy.yaml and ``train.precompute`` read):
    {out}/vae/            Wan2.2 VAE (diffusers ``AutoencoderKLWan``, widths 1/20 of the release) with the toy's
                          own latents_mean / latents_std in its config (the release's are for real video)
    {out}/v1-16.pth       MMAudio mel VAE (release layout: raw weights before EDM2 normalisation, data_mean/std)
    {out}/text_encoder/   a tiny frozen random UMT5 encoder (transformers folder); {out}/tokenizer/ the char tokenizer
    The vocoder is Griffin-Lim (``ovi.toy.vocoder``): no file.

Recipe (documented in the README, "The toy world"): the video VAE learns on random 5-frame windows (one causal
chunk after the first frame) with L1 + MSE on pixels, weighted up on the foreground (``foreground_weight``), and a
1e-6 KL; the audio VAE on random 2 s mel windows with L1 on the normalised mel of a sampled posterior plus a
1e-4 KL, its encoder's output gain fixed at 1, and EDM2's forced weight normalisation applied in every forward
(as MMAudio trains it). Both use AdamW, lr 2e-3 with a cosine decay.
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
from ovi.config import load_fusion_config
from ovi.fileio import atomic_path
from ovi.media import read_audio, read_video
from ovi.toy.clip import SAMPLE_RATE

VIDEO_VAE_WIDTHS = {"base_dim": 8, "decoder_base_dim": 8}
AUDIO_VAE_HIDDEN = 16
MODEL_CONFIG = "configs/model/toy.yaml"  # the toy model; its text_dim is the toy UMT5's d_model
VIDEO_WINDOW = 5  # frames per training window: the first frame plus one causal chunk of 4
AUDIO_WINDOW_MELS = 126  # ~2 s of mel frames (even: the VAE halves time)
KL_WEIGHT = 1e-6
FOREGROUND_GAIN = 8.0
AUDIO_KL_WEIGHT = 1e-4
LR = 2e-3
PARTS = ("text", "audio", "video")


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


def foreground_weight(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] -> [B, 1, T, H, W]: 1 on the backdrop, up to 1 + FOREGROUND_GAIN where a pixel differs from
    the clip's mean colour. The toy's events live in small objects (balls, lamps, a mouth) on flat backdrops; an
    unweighted loss spends the few training steps on the backdrop and blurs them away."""
    backdrop = x.mean(dim=(2, 3, 4), keepdim=True)  # [B, 3, 1, 1, 1]
    return 1.0 + FOREGROUND_GAIN * (x - backdrop).abs().mean(1, keepdim=True).clamp(max=1.0)


def _cosine(step: int, total: int) -> float:
    return LR * 0.5 * (1 + math.cos(math.pi * step / total))


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, step: int, steps: int, bar) -> None:  # noqa: ANN001
    """One optimiser step on the cosine schedule, the loss shown on the progress bar."""
    for g in opt.param_groups:
        g["lr"] = _cosine(step, steps)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    bar.set_postfix(loss=f"{loss.item():.4f}")


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
        err = (y - x).abs() + (y - x).pow(2)
        loss = (err * foreground_weight(x)).mean() + KL_WEIGHT * post.kl().mean()
        _step(opt, loss, step, steps, bar)
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
    # The encoder's output gain stays 1: with EDM2's magnitude-preserving layers the latents then keep about unit
    # variance, the scale the DiT's flow matching assumes (a learnt gain drifted to ~2.5x in trials).
    vae.encoder.learnable_gain.requires_grad_(False)
    convs = _conv_modules(vae)
    for m in convs:
        parametrize.register_parametrization(m, "weight", _ForcedWeightNorm())
    vae.weights_normalized = True  # the parametrisation normalises on the fly
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    for step in (bar := tqdm(range(steps), desc="audio VAE", unit="step")):
        picks = rng.integers(len(mels), size=batch)
        x = torch.stack([mels[i][:, (s := rng.integers(mels[i].shape[1] - AUDIO_WINDOW_MELS + 1)):
                                 s + AUDIO_WINDOW_MELS] for i in picks])  # [B, 80, W]
        moments = vae.encode_moments(x)
        mean, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        y = vae.decode(z)
        loss = ((y - x) / vae.data_std).abs().mean() + AUDIO_KL_WEIGHT * kl
        _step(opt, loss, step, steps, bar)
    for m in convs:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)  # keep the raw weights
    vae.weights_normalized = False
    return vae.eval().requires_grad_(False)


def save_text_encoder(out: Path, text_dim: int, seed: int = 0) -> None:
    """A frozen random tiny UMT5 (char tokenizer): fixed features the DiT learns to read."""
    tokenizer = char_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = build_umt5_encoder(TINY_TEXT_ENCODER | {"d_model": text_dim, "vocab_size": len(tokenizer)})
    encoder.save_pretrained(out / "text_encoder")
    tokenizer.save_pretrained(out / "tokenizer")


def save_audio_vae(vae: AudioVAE, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save({k: v.contiguous() for k, v in vae.state_dict().items()}, tmp)


@torch.no_grad()
def evaluate(folder: Path, clips: Path, limit: int = 16) -> dict:
    """Reconstruction of ``limit`` clips through the saved codecs (the loaders generation uses): video PSNR (dB),
    log-mel L1 distance of the audio VAE alone and through the vocoder, and onset timing (share of the original's
    onsets with a reconstructed onset within 10 ms and within one video frame, median absolute offset in ms of
    those within a frame)."""
    from ovi.codecs.audio_codec import AudioCodec
    from ovi.codecs.audio_vae import load_audio_vae
    from ovi.codecs.video_vae import VideoVAE
    from ovi.toy.hearing import detect_onsets
    from ovi.toy.metrics import match_events
    from ovi.toy.vocoder import GriffinLimVocoder

    frames, audio = load_world(clips, limit)
    vae = VideoVAE.from_pretrained(folder / "vae")
    codec = AudioCodec(load_audio_vae(folder / "v1-16.pth", hidden_dim=None), GriffinLimVocoder()).eval()
    psnr, mel_vae, mel_wave, hits, hits_frame, offsets = [], [], [], [], [], []
    for f, a in zip(frames, audio):
        x = _to_pixels(f)[None]  # [1, 3, T, H, W]
        y = vae.decode(vae.encode(x)).clamp(-1, 1)
        n = min(x.shape[2], y.shape[2])
        mse = F.mse_loss((y[:, :, :n] + 1) / 2, (x[:, :, :n] + 1) / 2).item()
        psnr.append(10 * math.log10(1.0 / max(mse, 1e-10)))
        mel = codec.mel(a[None])  # [1, 80, T]
        z = codec.vae.encode(mel)
        mel_back = codec.vae.decode(z)
        t = min(mel.shape[-1], mel_back.shape[-1])
        mel_vae.append((mel[..., :t] - mel_back[..., :t]).abs().mean().item())
        wave = codec.vocode(mel_back)[0]
        mel_w = codec.mel(wave[None])
        t = min(mel.shape[-1], mel_w.shape[-1])
        mel_wave.append((mel[..., :t] - mel_w[..., :t]).abs().mean().item())
        before, after = detect_onsets(a.numpy(), SAMPLE_RATE), detect_onsets(wave.numpy(), SAMPLE_RATE)
        share, off = match_events(before, after, 0.010)
        if not math.isnan(share):
            hits.append(share)
            hits_frame.append(match_events(before, after, 1.0 / 24)[0])
            offsets.extend(np.abs(match_events(before, after, 1.0 / 24)[1]).tolist())
    return {"clips": len(frames), "video_psnr_db": float(np.mean(psnr)), "mel_l1_audio_vae": float(np.mean(mel_vae)),
            "mel_l1_through_vocoder": float(np.mean(mel_wave)), "onsets_within_10ms": float(np.mean(hits)),
            "onsets_within_1_frame": float(np.mean(hits_frame)),
            "onset_median_abs_offset_ms": float(np.median(offsets) * 1000) if offsets else math.nan}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=Path, required=True, help="a world folder (ovi-toy make)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--video-steps", type=int, default=700)
    p.add_argument("--audio-steps", type=int, default=2000)
    p.add_argument("--max-clips", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=MODEL_CONFIG, help="model config whose text_dim the text encoder gets")
    p.add_argument("--parts", type=lambda t: t.split(","), default=list(PARTS), help="comma list of text,audio,video")
    p.add_argument("--report", type=Path, help="only measure the codecs in --out on these clips (a world folder)")
    a = p.parse_args(argv)
    if a.report:
        result = evaluate(a.out, a.report)
        print(json.dumps(result, indent=1))
        (a.out / "codecs_report.json").write_text(json.dumps(result, indent=1) + "\n")
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    frames, audio = load_world(a.clips, a.max_clips)
    done = a.out / "codecs_done.json"
    if "text" in a.parts and not (a.out / "text_encoder" / "config.json").exists():
        save_text_encoder(a.out, load_fusion_config(a.model).video.text_dim, a.seed)
    if "audio" in a.parts and not (a.out / "v1-16.pth").exists():
        save_audio_vae(train_audio_vae(audio, a.audio_steps, seed=a.seed), a.out / "v1-16.pth")
    if "video" in a.parts and not (a.out / "vae" / "config.json").exists():
        vae = train_video_vae(frames, a.video_steps, seed=a.seed)
        set_latent_stats(vae, frames[:32])
        vae.save_pretrained(a.out / "vae")
    if set(a.parts) != set(PARTS):
        return 0  # a partial run (parts trained in parallel processes): the full run writes the marker
    done.write_text(json.dumps({"video_steps": a.video_steps, "audio_steps": a.audio_steps,
                                "clips": len(frames)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
