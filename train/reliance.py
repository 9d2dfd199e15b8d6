"""Cross-modal reliance: how much each tower's loss depends on the other stream being its own clip's.

    python -m train.reliance --weights checkpoints/toy/fusion.safetensors --latents runs/toy/latents/fusion \
        [--model configs/model/toy.yaml] [--clips 24] [--sigmas 0.2 0.4 0.6 0.8] [--partner-sigma S] \
        [--time-shift S] [--json out.json]

On precomputed fusion latents, at each noise level sigma (both streams at sigma, as stage 2 trains, or the other
stream at ``--partner-sigma``; the same noise for every variant): each tower's velocity MSE with its clip's own
partner stream (``matched``), and with the partner stream of another clip of the batch (``shuffled``: rolled by
one). ``reliance = shuffled / matched - 1``: above 0 when a tower predicts its own stream better from the right
partner, which is what synchronisation needs; exactly 0 for an unfused model (its cross-modal values are zero).
A training diagnostic that needs no sampling, no codecs and no metric: seconds on a CPU for the toy model.

``--time-shift S``: the mismatched partner is the clip's own partner stream moved S seconds in time (circularly)
instead of another clip's: same content, wrong moment. Its reliance is the share that is about *when* (what
synchronisation needs); the default (another clip) also counts *what* (scene, colour, voice).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from data_pipeline.shards import iter_tar_samples, read_index
from ovi.checkpoints import TrainingMetadata, load_fusion_checkpoint
from ovi.config import load_fusion_config
from ovi.flow import FLOW
from ovi.geometry import AUDIO_LATENT_RATE, FPS, VAE_TEMPORAL_FACTOR
from ovi.models.fusion import FusionModel
from ovi.models.stream import Stream
from train.data.latents import LatentSample, unpack_latents

DEFAULT_SIGMAS = (0.2, 0.4, 0.6, 0.8)


def read_latents(dataset: str | Path, limit: int) -> list[LatentSample]:
    """The first ``limit`` audio-video samples of a precomputed latent dataset (``train.precompute``)."""
    out: list[LatentSample] = []
    for shard in read_index(dataset).shards:
        for _, files in iter_tar_samples(shard.path):
            sample = unpack_latents(files)
            if sample.video is None:
                raise ValueError(f"{dataset} holds audio-only latents; reliance needs fusion latents (video + audio)")
            out.append(sample)
            if len(out) == limit:
                return out
    if len(out) < 2:
        raise ValueError(f"{dataset} has {len(out)} sample(s); reliance needs at least 2 to pair clips across")
    return out


def _mse(pred: list[torch.Tensor], target: list[torch.Tensor]) -> float:
    return float(sum(((p.float() - y) ** 2).mean() for p, y in zip(pred, target)) / len(pred))


def time_shifted(video: list[torch.Tensor], audio: list[torch.Tensor], seconds: float
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each clip's own streams rolled ``seconds`` later in time: video [48, F, h, w] by whole latent frames
    (4 video frames), audio [L, C] by whole latents (32 ms)."""
    frames, latents = shift_steps(seconds)
    return [v.roll(frames, dims=1) for v in video], [a.roll(latents, dims=0) for a in audio]


def shift_steps(seconds: float) -> tuple[int, int]:
    """A time shift in (video latent frames, audio latents); under one video latent frame is refused."""
    frames = round(seconds * FPS / VAE_TEMPORAL_FACTOR)
    if frames == 0:
        raise ValueError(f"a time shift of {seconds} s is under one video latent frame "
                         f"({VAE_TEMPORAL_FACTOR / FPS:.3f} s); use a larger one")
    return frames, round(seconds * AUDIO_LATENT_RATE)


@torch.no_grad()
def reliance(model: FusionModel, samples: list[LatentSample], sigmas: tuple[float, ...] = DEFAULT_SIGMAS,
             seed: int = 0, partner_sigma: float | None = None, time_shift: float | None = None) -> list[dict]:
    """Per sigma: matched / shuffled MSE of each tower and its reliance (see the module doc).

    ``partner_sigma``: the other stream's noise level while a tower's own is ``sigma`` (None: the same, as a
    shared-level model trains); e.g. 0.2 asks how much a tower reads a nearly clean partner.
    ``time_shift``: seconds; the mismatched partner is the clip's own one moved in time, not another clip's."""
    model.eval()
    dtype = next(model.parameters()).dtype
    video = [s.video.float() for s in samples]  # [48, F, h, w] each
    audio = [s.audio.float() for s in samples]  # [L, C] each
    text = [s.text.to(dtype) for s in samples]

    def noised(xs: list[torch.Tensor], eps: list[torch.Tensor], s: float) -> list[torch.Tensor]:
        return [FLOW.noise(x, e, s).to(dtype) for x, e in zip(xs, eps)]

    def run(v_in: list[torch.Tensor], s_v: float, a_in: list[torch.Tensor], s_a: float) -> tuple[list, list]:
        t_v, t_a = (FLOW.timestep(torch.full((len(samples),), float(s))) for s in (s_v, s_a))
        return model(Stream(v_in, t_v, text), Stream(a_in, t_a, text))

    roll = lambda xs: xs[1:] + xs[:1]  # noqa: E731 - another clip's stream in every row
    rows = []
    for sigma in sigmas:
        g = torch.Generator().manual_seed(seed)
        eps_v = [torch.randn(x.shape, generator=g) for x in video]
        eps_a = [torch.randn(x.shape, generator=g) for x in audio]
        other = sigma if partner_sigma is None else partner_sigma
        target_v = [FLOW.velocity(x, e) for x, e in zip(video, eps_v)]
        target_a = [FLOW.velocity(x, e) for x, e in zip(audio, eps_a)]
        v_own, a_own = noised(video, eps_v, sigma), noised(audio, eps_a, sigma)
        if other == sigma:  # one forward gives both towers' matched predictions
            v_partner, a_partner = v_own, a_own
            pv, pa = run(v_own, sigma, a_own, sigma)
        else:
            v_partner, a_partner = noised(video, eps_v, other), noised(audio, eps_a, other)
            pa = run(v_partner, other, a_own, sigma)[1]
            pv = run(v_own, sigma, a_partner, other)[0]
        if time_shift is None:  # another clip's partner
            v_wrong, a_wrong = roll(v_partner), roll(a_partner)
        else:  # the own partner at the wrong moment: the clean stream moved, the noise where it was
            v_moved, a_moved = time_shifted(video, audio, time_shift)
            v_wrong, a_wrong = noised(v_moved, eps_v, other), noised(a_moved, eps_a, other)
        pa_shuffled = run(v_wrong, other, a_own, sigma)[1]
        pv_shuffled = run(v_own, sigma, a_wrong, other)[0]
        row = {"sigma": sigma, "partner_sigma": other}
        for name, matched, shuffled in (("audio", _mse(pa, target_a), _mse(pa_shuffled, target_a)),
                                        ("video", _mse(pv, target_v), _mse(pv_shuffled, target_v))):
            row |= {f"{name}_matched": matched, f"{name}_shuffled": shuffled,
                    f"{name}_reliance": shuffled / matched - 1.0}
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.reliance", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model YAML (configs/model/*.yaml); default: the one a stage-2 export records")
    p.add_argument("--weights", required=True, help="fusion .safetensors (a release file or a stage-2 export)")
    p.add_argument("--latents", required=True, help="precomputed fusion latents (train.precompute --out)")
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--sigmas", type=float, nargs="+", default=list(DEFAULT_SIGMAS))
    p.add_argument("--partner-sigma", type=float, default=None,
                   help="the other stream's noise level (default: each row's sigma, as stage 2 trains)")
    p.add_argument("--time-shift", type=float, default=None, metavar="S",
                   help="mismatch = the clip's own partner moved S seconds in time (default: another clip's)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    a = p.parse_args(argv)
    if any(not 0 < s <= 1 for s in a.sigmas) or not 0 <= (a.partner_sigma or 0) <= 1:
        p.error(f"--sigmas must lie in (0, 1] and --partner-sigma in [0, 1], got {a.sigmas}, {a.partner_sigma}")
    if a.time_shift is not None:
        try:
            shift_steps(a.time_shift)
        except ValueError as e:
            p.error(str(e))
    for path in (a.model, a.weights):
        if path and not Path(path).exists():
            p.error(f"{path} does not exist")
    cfg = load_fusion_config(a.model) if a.model else TrainingMetadata.read(a.weights).fusion_config()
    if cfg is None:
        p.error(f"{a.weights} records no model config (not a stage-2 export): pass --model configs/model/....yaml")
    samples = read_latents(a.latents, a.clips)
    model = load_fusion_checkpoint(a.weights, cfg, dtype=torch.float32)
    rows = reliance(model, samples, tuple(a.sigmas), partner_sigma=a.partner_sigma, time_shift=a.time_shift)
    partner = "each row's sigma" if a.partner_sigma is None else f"sigma {a.partner_sigma:g}"
    if a.time_shift is not None:
        partner += f"; mismatched = the own partner moved {a.time_shift:g} s"
    print(f"{len(samples)} clips, the other stream at {partner}; reliance = shuffled / matched - 1 (0: not used)")
    print("| sigma | audio matched | audio shuffled | audio reliance | video matched | video shuffled | video reliance |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sigma']:g} | {r['audio_matched']:.4f} | {r['audio_shuffled']:.4f} | {r['audio_reliance']:+.2%} | "
              f"{r['video_matched']:.4f} | {r['video_shuffled']:.4f} | {r['video_reliance']:+.2%} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
