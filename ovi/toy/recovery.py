"""How much of a clip's moving part one model call gives back, per noise level, against a denoiser that learnt nothing.

    python -m ovi.toy.recovery --release checkpoints/toy --clips runs/toy/eval_world --limit 12 [--json R.json]

A clip's *moving part* is its video latents' deviation from its own backdrop (per channel and cell, the median over
latent frames); its tokens are the top 5% by deviation norm: the balls, lamps and mouths. At each sigma the clip's
latents (both streams) are put on the training path, (1 - sigma) x0 + sigma eps, and the model's one-call clean
estimate x0 = x_sigma - sigma v (the caption as the prompt, no guidance) is compared with the truth over those
tokens in two ways: *given back*, its deviation projected on the true one (1 = all of it, 0 = the backdrop alone),
and *explained*, 1 - |error|^2 / |true deviation|^2 (1 = exact, 0 = no better than the backdrop alone, below 0 =
clutter that misses more than it finds). The baseline sees the same x_sigma and has learnt nothing: its backdrop
is the median of x_sigma / (1 - sigma) over latent frames, and each token's deviation from it is shrunk by the
share of that deviation's energy the noise explains (James-Stein). Where the model is above the baseline it uses
what one token's values cannot show (the objects' shape and path). This is the cheap (seconds a clip) counterpart
of ``ovi.toy.evaluate --renoise``, which integrates the whole way back and scores the events. The measures are in
the release's latents, so releases with different video codecs (pixel / Haar basis) are not comparable.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ovi.denoise import GuidanceConfig
from ovi.flow import FlowMatching
from ovi.toy.renoise import caption_velocity, clip_latents

if TYPE_CHECKING:
    from ovi.pipeline import OviPipeline

SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)
MOVING_SHARE = 0.05  # the top share of tokens by deviation from the backdrop: what moves or flashes


def check_sigmas(sigmas: tuple[float, ...]) -> None:
    """Refuse levels outside [0, 1) before anything loads (at sigma 1 the latents hold nothing of the clip)."""
    for s in sigmas:
        if not 0.0 <= s < 1.0:
            raise ValueError(f"--sigmas take noise levels in [0, 1) (at 1 nothing of the clip is left), got {s}")


def backdrop(video: torch.Tensor) -> torch.Tensor:
    """Video latents [C, F, h, w] -> their per-channel, per-cell median over latent frames [C, 1, h, w]."""
    return video.median(dim=1, keepdim=True).values


def moving_tokens(deviation: torch.Tensor, share: float = MOVING_SHARE) -> torch.Tensor:
    """Deviation [C, F, h, w] -> bool [F, h, w]: the tokens whose deviation norm is in the top ``share``."""
    norm = deviation.norm(dim=0)
    return norm >= norm.flatten().quantile(1.0 - share)


def recovered(truth: torch.Tensor, estimate: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """(given back, explained) of an estimated deviation against the true one over ``mask``'s tokens (both
    [C, F, h, w]): its projection on the truth, and 1 - its squared error relative to the truth's energy; NaN for a
    clip with nothing that moves."""
    t, e = truth[:, mask].float(), estimate[:, mask].float()
    energy = (t * t).sum()
    if energy == 0:
        return math.nan, math.nan
    return float((t * e).sum() / energy), float(1.0 - ((e - t) ** 2).sum() / energy)


def shrinkage_estimate(x_sigma: torch.Tensor, sigma: float) -> torch.Tensor:
    """The no-learning clean estimate from x_sigma [C, F, h, w] alone: a median backdrop plus each token's deviation
    shrunk by the noise's expected share of its energy (James-Stein per token)."""
    y = x_sigma / (1.0 - sigma)  # unbiased for x0, noise std sigma / (1 - sigma) per value
    base = backdrop(y)
    deviation = y - base
    noise_energy = deviation.shape[0] * (sigma / (1.0 - sigma)) ** 2  # per token, summed over channels
    keep = (1.0 - noise_energy / deviation.pow(2).sum(0, keepdim=True).clamp_min(1e-12)).clamp_min(0.0)
    return base + deviation * keep


@torch.no_grad()
def clip_recovery(pipe: OviPipeline, clip: Path, caption: str, sigmas: tuple[float, ...] = SIGMAS,
                  seed: int = 0) -> dict[float, dict[str, float]]:
    """sigma -> {"model given back", "model explained", "baseline given back", "baseline explained"} for ``clip``'s
    moving part after one call at that level."""
    check_sigmas(sigmas)
    x0_v, x0_a = clip_latents(pipe, clip)  # [C, F, h, w], [L, C]
    base = backdrop(x0_v)
    truth = x0_v - base
    mask = moving_tokens(truth)
    velocity = caption_velocity(pipe, caption, GuidanceConfig("euler", 1, 1.0, 1.0, 1.0, 0))  # the prompt alone
    gen = torch.Generator(pipe.device).manual_seed(seed)  # one noise draw, scaled to every level
    eps_v = torch.randn(x0_v.shape, generator=gen, device=pipe.device, dtype=pipe.dtype)
    eps_a = torch.randn(x0_a.shape, generator=gen, device=pipe.device, dtype=pipe.dtype)
    flow, out = FlowMatching(), {}
    for s in sigmas:
        x_v, x_a = flow.noise(x0_v, eps_v, s), flow.noise(x0_a, eps_a, s)
        v_v, _ = velocity(x_v, x_a, flow.timestep(torch.tensor([s], device=pipe.device)))
        estimates = {"model": flow.to_data(x_v, v_v, s), "baseline": shrinkage_estimate(x_v.float(), s)}
        out[s] = {f"{name} {measure}": value for name, x0 in estimates.items()
                  for measure, value in zip(("given back", "explained"), recovered(truth, x0 - base, mask))}
    return out


def recovery(release: Path, clips: Path, limit: int = 12, sigmas: tuple[float, ...] = SIGMAS
             ) -> dict[str, dict[float, float]]:
    """Means over the first ``limit`` clips of ``clips`` (clip i with noise seed i): {row: {sigma: value}}, rows as
    :func:`clip_recovery`'s keys."""
    from tqdm import tqdm

    from ovi.pipeline import OviPipeline  # heavy: after the arguments are checked
    from ovi.toy.evaluate import toy_config
    from ovi.toy.sidecar import read_caption

    check_sigmas(sigmas)
    videos = sorted(Path(clips).glob("*.mp4"))[:limit]
    if not videos:
        raise FileNotFoundError(f"no .mp4 clips in {clips}; make them with: ovi-toy make --out {clips}")
    pipe = OviPipeline.from_config(toy_config(release))
    per_clip = [clip_recovery(pipe, v, read_caption(v), sigmas, seed=i)
                for i, v in enumerate(tqdm(videos, desc="recovery", unit="clip"))]

    def mean(values: list[float]) -> float:  # over the clips where something moves
        kept = [v for v in values if not math.isnan(v)]
        return sum(kept) / len(kept) if kept else math.nan

    return {row: {s: mean([c[s][row] for c in per_clip]) for s in sigmas} for row in per_clip[0][sigmas[0]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", type=Path, required=True, help="a folder in checkpoints/toy's layout")
    p.add_argument("--clips", type=Path, required=True, help="a world folder (ovi-toy make)")
    p.add_argument("--limit", type=int, default=12)
    p.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args(argv)
    try:
        check_sigmas(tuple(a.sigmas))
    except ValueError as e:
        p.error(str(e))
    try:
        shares = recovery(a.release, a.clips, a.limit, tuple(a.sigmas))
    except FileNotFoundError as e:  # no clips, or a release folder without its files: one line, not a traceback
        p.error(str(e))
    print(f"{'sigma':19s} " + "  ".join(f"{s:5.2f}" for s in a.sigmas))
    for name, row in shares.items():
        print(f"{name:19s} " + "  ".join(f"{row[s]:5.2f}" for s in a.sigmas))
    if a.json:
        a.json.write_text(json.dumps({k: {str(s): v for s, v in row.items()} for k, row in shares.items()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
