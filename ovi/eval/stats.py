"""The statistics behind the distribution metrics, written out so they can be checked against closed forms.

FD (Fréchet distance between Gaussians fitted to two embedding sets, as FAD/FID/FVD use it), KL between
paired class distributions (MMAudio's protocol with PANNs), and the Inception Score of class posteriors.
"""
from __future__ import annotations

import numpy as np
from scipy import linalg

EPS = 1e-6  # added to the covariance diagonals when their product is singular (few clips, wide embeddings)


def _embedding_set(features: np.ndarray) -> np.ndarray:
    """``features`` as float64 [N, D]; N >= 2 (a covariance needs two samples)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {features.shape}; evaluate at least two clips")
    return features


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) of ``features`` [N, D]; N >= 2 (a covariance needs two samples)."""
    features = _embedding_set(features)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    covmean = linalg.sqrtm(sigma1 @ sigma2)  # no `disp`: deprecated, gone in SciPy 1.18
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * EPS
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)  # sqrtm of a product of PSD matrices: imaginary parts are round-off
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean), 0.0))


def frechet_distance_features(a: np.ndarray, b: np.ndarray) -> float:
    """FD between two embedding sets [N, D] and [M, D].

    With fewer clips than dimensions (50 clips of 2048-d PANNs / I3D embeddings) the [D, D] square root is
    both slow (~14 s on 2 cores) and ill-posed (singular covariances). There the trace comes from the samples:
    with centred, scaled sets X [N, D] and Y [M, D] (S1 = X^T X, S2 = Y^T Y), the nonzero eigenvalues of S1 S2
    are the squared singular values of X Y^T [N, M], so Tr (S1 S2)^(1/2) is that matrix's nuclear norm: exact,
    with no diagonal offset.
    """
    a, b = _embedding_set(a), _embedding_set(b)
    (n, d), m = a.shape, b.shape[0]
    if min(n, m) > d:
        return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)  # no [D, D] covariance: the samples carry it
    x = (a - mu1) / np.sqrt(n - 1)  # [N, D]
    y = (b - mu2) / np.sqrt(m - 1)  # [M, D]
    trace_root = np.linalg.svd(x @ y.T, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + (x * x).sum() + (y * y).sum() - 2.0 * trace_root, 0.0))


def _normalise(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, None)
    return p / p.sum(axis=-1, keepdims=True)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) per row of [N, C] (or for one [C] pair); rows are normalised to sum 1 first (PANNs gives
    independent sigmoid scores per class, read here as an unnormalised distribution)."""
    p, q = _normalise(p), _normalise(q)
    return (p * (np.log(p) - np.log(q))).sum(axis=-1)


def inception_score(probs: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of class posteriors [N, C]."""
    p = _normalise(probs)
    marginal = p.mean(axis=0, keepdims=True)
    return float(np.exp(kl_divergence(p, marginal).mean()))
