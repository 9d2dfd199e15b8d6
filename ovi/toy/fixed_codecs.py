"""The toy's codecs: fixed rearrangements of pixels and mel frames into the release's latent shapes.

Why not the release's codec classes: trained at toy width on this machine's budget, the Wan2.2 VAE reached
17.7 dB and kept the backdrop only (balls, lamps and mouths blurred away: 10% of visual events survived after
5,400 steps), and the MMAudio VAE kept 33% of the onsets within 10 ms. A diffusion model cannot learn events its
codec erases, so the toy uses the smallest honest substitutes (issue: "codecs that reconstruct"), with nothing
learned but per-channel statistics:

- video: ``PixelVideoCodec``: frames area-pooled by ``pool`` (8: 64 px -> 8 px), the first frame alone and then
  groups of 4 frames (Wan2.2's causal layout: 121 frames -> 31 latent frames), each 2x2 pixel block stacked into
  channels: 3 colours x 4 frames x 4 pixels = the release's 48 latent channels at 1/16 of the frame size. Decoding
  inverts that exactly and upsamples bilinearly. On the world's clips: 25.5 dB, 97% of visual events and 100% of
  kinds kept (README, "The toy world"). With ``basis="haar_time"`` (``ovi-toy rebuild --video-basis haar_time``)
  each group's 4 frames are stored as an orthonormal Haar transform (their mean, then the three within-group
  changes) before the per-channel statistics: a static backdrop then fills the 12 mean channels and the 36
  change channels carry only what moves or flashes, scaled to unit variance like everything else. Why: in the
  plain pixel basis a lamp's flash or a mouth's opening is ~1% of a latent's variance, so the flow-matching loss
  barely sees the events the toy exists to synchronise (10-20x more weight in the Haar basis); it is exactly
  invertible, so it reconstructs the same pixels. Tried for the shipped recipe and not adopted: no sync gain
  (ovi/toy/README.md, "A codec that weighs motion").
- audio: ``MelPoolCodec`` in place of the MMAudio VAE: the mean of two consecutive log-mel frames (80 channels at
  the release's 31.25 latents/s); decoding repeats each twice and the Griffin-Lim vocoder (``ovi.toy.vocoder``)
  turns the mel into sound. Stacking the pair instead (160 channels, lossless) would give the toy tower (dim 128)
  more input channels than hidden ones: a model cannot then reproduce the noise it must remove, and its samples
  keep a hiss. For the same reason the toy video tower uses 1x1x1 patches (48 channels per token, not 192).

Both are described by a small JSON file (``{"codec": ..., statistics}``) that ``load_fixed_codec`` reads and the
rebuild writes (``fit_*``), so ``ovi.components`` and ``train.released_encoders`` load them like release files.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ovi.codecs.mel import N_MELS
from ovi.fileio import atomic_path
from ovi.geometry import MEL_FRAMES_PER_LATENT, VAE_SPATIAL_FACTOR, VAE_TEMPORAL_FACTOR, latent_frames

VIDEO_CODEC = "pixel_video"
AUDIO_CODEC = "mel_pool"
TEMPORAL = VAE_TEMPORAL_FACTOR  # video frames per latent frame after the first (Wan2.2's)
UNSHUFFLE = 2  # pooled pixels per latent cell, each way
DEFAULT_POOL = VAE_SPATIAL_FACTOR // UNSHUFFLE  # 8: with the unshuffle, the release's 16x spatial compression
MEL_FRAMES = MEL_FRAMES_PER_LATENT  # mel frames per audio latent (the MMAudio VAE's time halving)
STD_FLOOR = 1e-2  # a channel that never varies in the world is left unscaled, not blown up
BASES = ("pixels", "haar_time")  # how a group's 4 frames are stored (see the module docstring)


def _haar4() -> torch.Tensor:
    """Orthonormal 4-point Haar matrix [4, 4]: rows = mean, first half - second half, frame 0 - 1, frame 2 - 3."""
    r = 0.5**0.5
    return torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, -0.5, -0.5], [r, -r, 0.0, 0.0], [0.0, 0.0, r, -r]])


def is_fixed_codec(path: str | Path) -> bool:
    return Path(path).suffix == ".json"


def _read(path: Path, kind: str) -> dict:
    spec = json.loads(Path(path).read_text())
    if spec.get("codec") != kind:
        raise ValueError(f"{path}: expected {{\"codec\": \"{kind}\"}}, found {spec.get('codec')!r}; a toy codec file "
                         "is written by `ovi-toy rebuild` (ovi.toy.fixed_codecs)")
    return spec


class PixelVideoCodec(nn.Module):
    """video [B, 3, 1 + 4k, H, W] in [-1, 1] <-> normalised latent [B, 48, 1 + k, H/16, W/16]; the VideoVAE API."""

    def __init__(self, mean: Iterable[float], std: Iterable[float], pool: int = DEFAULT_POOL,
                 basis: str = "pixels") -> None:
        super().__init__()
        if basis not in BASES:
            raise ValueError(f"unknown pixel codec basis {basis!r}; expected one of {BASES}")
        self.pool, self.basis = pool, basis
        self.register_buffer("haar", _haar4() if basis == "haar_time" else torch.eye(TEMPORAL),  # [4 out, 4 frames]
                             persistent=False)  # from the JSON file, never a state dict
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))  # [48]
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).clamp(min=STD_FLOOR))  # [48]
        if self.mean.numel() != self.z_dim:
            raise ValueError(f"{self.mean.numel()} channel statistics for a {self.z_dim}-channel pixel codec")

    z_dim = 3 * TEMPORAL * UNSHUFFLE * UNSHUFFLE
    temporal_compression = TEMPORAL
    tiling = False

    @property
    def spatial_compression(self) -> int:
        return self.pool * UNSHUFFLE

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @staticmethod
    def latent_frames(num_frames: int) -> int:
        return latent_frames(num_frames)

    def enable_tiling(self, *_: int) -> None:
        """Nothing to tile: decoding is a reshape and an upsample per frame."""

    def raw(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] -> un-normalised [B, 48, F, h, w]; channels ordered (colour, frame in group, dy, dx)."""
        b, c, t, h, w = video.shape
        if c != 3 or h % self.spatial_compression or w % self.spatial_compression:
            raise ValueError(f"expected a video [B, 3, T, H, W] with H and W multiples of {self.spatial_compression}, "
                             f"got {tuple(video.shape)}")
        n = self.latent_frames(t)
        first = video[:, :, :1].expand(b, c, TEMPORAL, h, w)  # the first latent frame holds frame 0 alone
        x = torch.cat([first, video[:, :, 1 : 1 + TEMPORAL * (n - 1)]], 2).float()  # [B, 3, 4F, H, W]
        x = F.avg_pool3d(x, (1, self.pool, self.pool))  # [B, 3, 4F, H/p, W/p]
        x = x.view(b, c, n, TEMPORAL, h // self.pool, w // self.pool).transpose(2, 3)  # [B, 3, 4, F, h', w']
        x = torch.einsum("kt,bctfhw->bckfhw", self.haar, x)  # the group's frames in the codec's basis
        x = x.reshape(b, c * TEMPORAL, n, h // self.pool, w // self.pool)
        x = F.pixel_unshuffle(x.transpose(1, 2), UNSHUFFLE)  # [B, F, 12 * 4, h, w]
        return x.transpose(1, 2)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        x = self.raw(video.to(self.device))
        return (x - self.mean.view(1, -1, 1, 1, 1)) / self.std.view(1, -1, 1, 1, 1)

    def _frames(self, latent: torch.Tensor) -> torch.Tensor:
        """normalised [B, 48, F, h, w] -> pooled frames [B, 3, 1 + 4(F-1), h', w']."""
        b, z, n, h, w = latent.shape
        if z != self.z_dim:
            raise ValueError(f"expected a latent [B, {self.z_dim}, F, h, w], got shape {tuple(latent.shape)}")
        x = latent.float() * self.std.view(1, -1, 1, 1, 1) + self.mean.view(1, -1, 1, 1, 1)
        x = F.pixel_shuffle(x.transpose(1, 2), UNSHUFFLE)  # [B, F, 12, h', w']
        x = x.view(b, n, 3, TEMPORAL, h * UNSHUFFLE, w * UNSHUFFLE).permute(0, 2, 1, 3, 4, 5)  # [B, 3, F, 4, h', w']
        x = torch.einsum("kt,bcfkhw->bcfthw", self.haar, x)  # orthonormal: the transpose inverts it
        first = x[:, :, 0].mean(2, keepdim=True)  # the 4 copies of frame 0, averaged
        rest = x[:, :, 1:].reshape(b, 3, TEMPORAL * (n - 1), h * UNSHUFFLE, w * UNSHUFFLE)
        return torch.cat([first, rest], 2)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, chunk_frames: int = 0, out_device: torch.device | str | None = None
               ) -> torch.Tensor:
        """normalised latent -> video [B, 3, 1 + 4(F-1), 16h, 16w] in [-1, 1] (``chunk_frames`` changes nothing)."""
        frames = self._frames(latent.to(self.device))
        b, c, t, h, w = frames.shape
        up = F.interpolate(frames.transpose(1, 2).reshape(b * t, c, h, w), scale_factor=self.pool, mode="bilinear",
                           align_corners=False)
        video = up.view(b, t, c, h * self.pool, w * self.pool).transpose(1, 2).clamp(-1.0, 1.0)
        return video if out_device is None else video.to(out_device)

    def decode_chunks(self, latent: torch.Tensor, chunk_frames: int = 1) -> Iterator[torch.Tensor]:
        video = self.decode(latent)
        yield video[:, :, :1]
        for start in range(1, video.shape[2], TEMPORAL * chunk_frames):
            yield video[:, :, start : start + TEMPORAL * chunk_frames]

    @classmethod
    def from_file(cls, path: str | Path) -> "PixelVideoCodec":
        spec = _read(Path(path), VIDEO_CODEC)
        # Files written before the Haar basis carry no "basis" and are plain pixels.
        return cls(spec["latents_mean"], spec["latents_std"], spec.get("pool", DEFAULT_POOL),
                   spec.get("basis", "pixels")).eval()


class MelPoolCodec(nn.Module):
    """log-mel [B, 80, 2L] <-> normalised latent [B, 80, L]; the AudioVAE API that ``AudioCodec`` calls."""

    def __init__(self, mean: Iterable[float], std: Iterable[float]) -> None:
        super().__init__()
        self.register_buffer("data_mean", torch.tensor(list(mean), dtype=torch.float32))  # [80]
        self.register_buffer("data_std", torch.tensor(list(std), dtype=torch.float32).clamp(min=STD_FLOOR))
        if self.data_mean.numel() != self.latent_dim:
            raise ValueError(f"{self.data_mean.numel()} channel statistics for a {self.latent_dim}-channel mel codec")

    latent_dim = N_MELS

    @staticmethod
    def raw(mel: torch.Tensor) -> torch.Tensor:
        """[B, 80, T] -> [B, 80, T // 2]: each pair of frames averaged."""
        b, m, t = mel.shape
        return mel[:, :, : t // MEL_FRAMES * MEL_FRAMES].reshape(b, m, t // MEL_FRAMES, MEL_FRAMES).mean(-1)

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        return (self.raw(mel.float()) - self.data_mean[:, None]) / self.data_std[:, None]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = z.float() * self.data_std[:, None] + self.data_mean[:, None]  # [B, 80, L]
        return x.repeat_interleave(MEL_FRAMES, dim=-1)  # [B, 80, 2L]

    @classmethod
    def from_file(cls, path: str | Path) -> "MelPoolCodec":
        spec = _read(Path(path), AUDIO_CODEC)
        return cls(spec["data_mean"], spec["data_std"]).eval()


def _moments(chunks: Iterable[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over [C, ...] tensors."""
    total = sq = None
    count = 0
    for x in chunks:
        flat = x.double().flatten(1)  # [C, N]
        total = flat.sum(1) if total is None else total + flat.sum(1)
        sq = (flat**2).sum(1) if sq is None else sq + (flat**2).sum(1)
        count += flat.shape[1]
    if not count:
        raise ValueError("no clips to fit the codec statistics on")
    mean = total / count
    return mean.tolist(), (sq / count - mean**2).clamp(min=0).sqrt().tolist()


def fit_video_codec(videos: Iterable[torch.Tensor], out: Path, pool: int = DEFAULT_POOL,
                    basis: str = "pixels") -> PixelVideoCodec:
    """``videos``: [3, T, H, W] in [-1, 1]; writes the codec file and returns the codec."""
    probe = PixelVideoCodec([0.0] * PixelVideoCodec.z_dim, [1.0] * PixelVideoCodec.z_dim, pool, basis)
    mean, std = _moments(probe.raw(v[None])[0] for v in videos)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps({"codec": VIDEO_CODEC, "pool": pool, "basis": basis, "latents_mean": mean,
                                         "latents_std": std}))
    return PixelVideoCodec.from_file(out)


def fit_audio_codec(mels: Iterable[torch.Tensor], out: Path) -> MelPoolCodec:
    """``mels``: log-mel [80, T]; writes the codec file and returns the codec."""
    mean, std = _moments(MelPoolCodec.raw(m[None])[0] for m in mels)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps({"codec": AUDIO_CODEC, "data_mean": mean, "data_std": std}))
    return MelPoolCodec.from_file(out)


def load_fixed_codec(path: str | Path) -> PixelVideoCodec | MelPoolCodec:
    kind = json.loads(Path(path).read_text()).get("codec")
    loaders = {VIDEO_CODEC: PixelVideoCodec.from_file, AUDIO_CODEC: MelPoolCodec.from_file}
    if kind not in loaders:
        raise ValueError(f"{path}: unknown codec {kind!r}; expected one of {sorted(loaders)}")
    return loaders[kind](path)
