"""A paper model of Ulysses sequence parallelism for one clip's denoising: compute vs all-to-all per fusion block.

    python -m ovi.parallel.scaling            # the README's table (1/2/4/8 H100s, 704² x 121 and 960² x 241)

Per fusion block and CFG row, for a tower of width d, FFN width f, L own tokens, La the other tower's, T text:
  FLOPs  = 2 L (6 d²  [q, k, v, o of self-attention; q, o of the text/cross-modal attention]
                + 2 d f [FFN])  + 4 L d (L + T + La)  [QK^T and PV of the three attentions]
         (+ 2 La d · 2 d for the k/v projections of the other tower's tokens; the text K/V is cached)
  Bytes  = per rank, each all-to-all moves (P-1)/P of its (L/P) x d tensor: self-attention q, k, v, out (4),
           cross-modal q, out (2) and this tower's tokens as the other tower's k, v (2): 8 (L/P) d e (P-1)/P
Time per block = FLOPs / (P x achieved FLOP/s) + Bytes / all-to-all bandwidth (no overlap: an upper bound).
Not split and not counted: the text encoder and the VAE decode (on the SP leader), the patch embedding and the
head (a few % of a block). Constants are assumptions, stated where used; nothing here is measured.
"""
from __future__ import annotations

from dataclasses import dataclass

from ovi.geometry import ClipGeometry

# Assumptions (H100 SXM): bf16 dense peak 989 TFLOP/s, ~45% achieved by attention-heavy DiT blocks; NVLink 4
# all-to-all ~200 GB/s per GPU achieved (450 GB/s per direction nominal).
H100_ACHIEVED_FLOPS = 0.45 * 989e12
NVLINK_ALL_TO_ALL_BYTES_S = 200e9
RELEASE = {"dim": 3072, "ffn_dim": 14336, "layers": 30, "text_len": 512}


@dataclass(frozen=True)
class ScalingRow:
    gpus: int
    compute_s: float  # per 50-step CFG generation, all blocks, both towers
    comm_s: float
    speedup: float  # against one GPU (no communication)
    comm_fraction: float


def block_flops(tokens: int, other: int, dim: int, ffn: int, text: int) -> float:
    linear = 2 * tokens * (6 * dim * dim + 2 * dim * ffn) + 2 * other * 2 * dim * dim
    return linear + 4 * tokens * dim * (tokens + text + other)


def block_bytes_per_rank(tokens: int, dim: int, gpus: int, elem_bytes: int = 2) -> float:
    return 8 * tokens / gpus * dim * elem_bytes * (gpus - 1) / gpus


def scaling(height: int, width: int, frames: int, gpus_list: tuple[int, ...] = (1, 2, 4, 8), steps: int = 50,
            rows: int = 2) -> list[ScalingRow]:
    geo = ClipGeometry.for_frames(frames)
    lv, la = geo.video_tokens(height, width), geo.audio_latents
    d, f, n, t = RELEASE["dim"], RELEASE["ffn_dim"], RELEASE["layers"], RELEASE["text_len"]
    flops = n * steps * rows * (block_flops(lv, la, d, f, t) + block_flops(la, lv, d, f, t))
    base = flops / H100_ACHIEVED_FLOPS
    out = []
    for p in gpus_list:
        compute = base / p
        comm = n * steps * rows * (block_bytes_per_rank(lv, d, p) + block_bytes_per_rank(la, d, p)) / NVLINK_ALL_TO_ALL_BYTES_S
        out.append(ScalingRow(p, compute, comm, base / (compute + comm), comm / (compute + comm)))
    return out


def main() -> None:
    for h, w, frames in ((704, 704, 121), (960, 960, 241)):
        geo = ClipGeometry.for_frames(frames)
        print(f"{h}x{w}, {frames} frames: {geo.video_tokens(h, w)} video + {geo.audio_latents} audio tokens")
        print("  GPUs  compute s  all-to-all s  speed-up  comm share")
        for r in scaling(h, w, frames):
            print(f"  {r.gpus:4d}  {r.compute_s:9.1f}  {r.comm_s:12.1f}  {r.speedup:7.2f}x  {r.comm_fraction:9.1%}")


if __name__ == "__main__":
    main()
