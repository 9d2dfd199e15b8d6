"""Write the toy's codecs for a world folder: the fixed pixel / mel-pool codecs and the tiny text encoder.

    python -m ovi.toy.codecs --clips runs/toy/world --out checkpoints/toy [--report WORLD]

Writes (what ``ovi.components.load_components`` with configs/inference/toy.yaml and ``train.precompute`` read):
    {out}/video_codec.json  ``ovi.toy.fixed_codecs.PixelVideoCodec`` (the Wan2.2 VAE's place) and its per-channel
                            latent statistics over the world's clips
    {out}/audio_codec.json  ``MelPoolCodec`` (the MMAudio VAE's place) and its per-channel statistics
    {out}/text_encoder/     the toy's tiny frozen UMT5 encoder (transformers folder; ``ovi.toy.text``) and
    {out}/tokenizer/        its word tokenizer, whose vocabulary is the world's caption words
    The vocoder is Griffin-Lim (``ovi.toy.vocoder``): no weights.

Why fixed codecs and not the release's classes trained at toy width: ``ovi.toy.fixed_codecs`` (figures there and in
ovi/toy/README.md, "Codecs and text encoder"). ``--report`` measures reconstruction through the written files.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from ovi.codecs.audio_codec import AudioCodec
from ovi.codecs.mel import MelFrontEnd
from ovi.config import load_fusion_config
from ovi.geometry import FPS
from ovi.imaging import frames_to_pixels
from ovi.media import read_audio, read_video, to_uint8_frames
from ovi.toy.clip import SAMPLE_RATE
from ovi.toy.fixed_codecs import BASES, MelPoolCodec, PixelVideoCodec, fit_audio_codec, fit_video_codec
from ovi.toy.layout import AUDIO_CODEC_FILE, MODEL_CONFIG, VIDEO_CODEC_FILE
from ovi.toy.sidecar import read_caption
from ovi.toy.text import build_text_encoder

STATS_CLIPS = 64  # clips the latent statistics are measured on


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    """Peak signal-to-noise ratio of ``b`` against ``a`` in dB (values up to ``peak``; 100 dB when equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10 * math.log10(peak**2 / max(mse, 1e-10 * peak**2))


def world_videos(folder: Path, limit: int | None = None) -> list[Path]:
    """A world folder's clips in order (the first ``limit``); a clear error when there are none."""
    videos = sorted(Path(folder).glob("*.mp4"))[:limit]
    if not videos:
        raise FileNotFoundError(f"no .mp4 clips in {folder}; make them with: ovi-toy make --out {folder} --num 200")
    return videos


def load_world(folder: Path, limit: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every mp4 of a world folder -> (frames uint8 [T, H, W, 3], audio float32 [N]) lists."""
    videos = world_videos(folder, limit)
    frames = [torch.from_numpy(read_video(v)[0]) for v in videos]
    audio = [torch.from_numpy(read_audio(v, SAMPLE_RATE)) for v in videos]
    return frames, audio


def save_text_encoder(out: Path, text_dim: int, captions: list[str], seed: int = 0) -> None:
    """The toy's frozen UMT5 and its word tokenizer over ``captions``' words (``ovi.toy.text``)."""
    encoder, tokenizer = build_text_encoder(captions, text_dim, seed)
    encoder.save_pretrained(out / "text_encoder")
    tokenizer.save_pretrained(out / "tokenizer")


def write_codecs(frames: list[torch.Tensor], audio: list[torch.Tensor], out: Path, video_basis: str = "pixels") -> None:
    """Fit the fixed codecs' statistics on (up to STATS_CLIPS of) the world's clips and write their files."""
    pixels = (frames_to_pixels(f, None, None) for f in frames[:STATS_CLIPS])  # [3, T, H, W] each
    fit_video_codec(pixels, out / VIDEO_CODEC_FILE, basis=video_basis)
    mel = MelFrontEnd()
    with torch.no_grad():
        fit_audio_codec((mel(a[None])[0] for a in audio[:STATS_CLIPS]), out / AUDIO_CODEC_FILE)


@torch.no_grad()
def evaluate(folder: Path, clips: Path, limit: int = 16) -> dict:
    """Reconstruction of ``limit`` clips through the codec files in ``folder`` (the loaders generation uses): video
    PSNR (dB) and the share of the sidecars' visual events, audio events (onsets within a frame) and kinds the metric
    still finds in the decoded clip;
    log-mel L1 of the audio codec alone and through the vocoder; onset timing (share of the original's onsets with
    a reconstructed onset within 10 ms and within one video frame, median |offset| of those within a frame, ms)."""
    from ovi.toy.hearing import detect_onsets
    from ovi.toy.metrics import match_events, score_clip
    from ovi.toy.vocoder import GriffinLimVocoder

    videos = sorted(Path(clips).glob("*.mp4"))[:limit]
    frames, audio = load_world(clips, limit)
    vae = PixelVideoCodec.from_file(folder / VIDEO_CODEC_FILE)
    codec = AudioCodec(MelPoolCodec.from_file(folder / AUDIO_CODEC_FILE), GriffinLimVocoder()).eval()
    psnrs, mel_codec, mel_wave, hits, hits_frame, offsets, events, kinds = [], [], [], [], [], [], [], []
    audio_events = []
    for path, f, a in zip(videos, frames, audio):
        x = frames_to_pixels(f, None, None)[None]  # [1, 3, T, H, W]
        y = vae.decode(vae.encode(x))
        n = min(x.shape[2], y.shape[2])
        psnrs.append(psnr(((y[:, :, :n] + 1) / 2).numpy(), ((x[:, :, :n] + 1) / 2).numpy(), peak=1.0))
        mel = codec.mel(a[None])  # [1, 80, T]
        mel_back = codec.vae.decode(codec.vae.encode(mel))
        t = min(mel.shape[-1], mel_back.shape[-1])
        mel_codec.append((mel[..., :t] - mel_back[..., :t]).abs().mean().item())
        wave = codec.vocode(mel_back)[0]
        mel_w = codec.mel(wave[None])
        t = min(mel.shape[-1], mel_w.shape[-1])
        mel_wave.append((mel[..., :t] - mel_w[..., :t]).abs().mean().item())
        before, after = detect_onsets(a.numpy(), SAMPLE_RATE), detect_onsets(wave.numpy(), SAMPLE_RATE)
        share, _ = match_events(before, after, 0.010)
        if not math.isnan(share):
            hits.append(share)
            share_frame, within_frame = match_events(before, after, 1.0 / FPS)
            hits_frame.append(share_frame)
            offsets.extend(np.abs(within_frame).tolist())
        pixels = to_uint8_frames(y[0])  # [T, H, W, 3]
        truth = json.loads(path.with_suffix(".json").read_text())
        judged = score_clip(pixels, wave.numpy(), FPS, SAMPLE_RATE, truth).truth  # both streams decoded
        kinds.append(float(judged["kind_ok"]))
        if "visual_recall" in judged:
            events.append(judged["visual_recall"])
            audio_events.append(judged["audio_recall"])
    return {"clips": len(frames), "video_psnr_db": float(np.mean(psnrs)),
            "visual_events_kept": float(np.mean(events)) if events else math.nan, "kind_kept": float(np.mean(kinds)),
            "audio_events_kept": float(np.mean(audio_events)) if audio_events else math.nan,
            "mel_l1_audio_codec": float(np.mean(mel_codec)), "mel_l1_through_vocoder": float(np.mean(mel_wave)),
            "onsets_within_10ms": float(np.mean(hits)), "onsets_within_1_frame": float(np.mean(hits_frame)),
            "onset_median_abs_offset_ms": float(np.median(offsets) * 1000) if offsets else math.nan}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=Path, required=True, help="a world folder (ovi-toy make)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=MODEL_CONFIG, help="model config whose text_dim the text encoder gets")
    p.add_argument("--report", type=Path, help="only measure the codecs in --out on these clips (a world folder)")
    p.add_argument("--video-basis", choices=BASES, default="pixels",
                   help="how the pixel codec stores a group's 4 frames (ovi.toy.fixed_codecs; the shipped: pixels)")
    a = p.parse_args(argv)
    if a.report:
        result = evaluate(a.out, a.report)
        print(json.dumps(result, indent=1))
        (a.out / "codecs_report.json").write_text(json.dumps(result, indent=1) + "\n")
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    if not (a.out / "text_encoder" / "config.json").exists():
        captions = [read_caption(v) for v in world_videos(a.clips)]  # all clips: the vocabulary is every word
        save_text_encoder(a.out, load_fusion_config(a.model).video.text_dim, captions, a.seed)
    frames, audio = load_world(a.clips, STATS_CLIPS)
    write_codecs(frames, audio, a.out, a.video_basis)
    (a.out / "codecs_done.json").write_text(json.dumps({"clips": len(frames)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
