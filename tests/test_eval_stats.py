"""The hand-written statistics of ovi-eval against closed forms and scipy."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy

from ovi.eval.stats import (
    frechet_distance,
    frechet_distance_features,
    gaussian_stats,
    inception_score,
    kl_divergence,
)


def test_identical_sets_have_zero_frechet_distance():
    x = np.random.default_rng(0).normal(size=(64, 8))
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_shifted_gaussian_gives_the_closed_form():
    # Same covariance: FD = ||mu1 - mu2||^2 exactly.
    cov = np.diag([1.0, 2.0, 0.5])
    assert frechet_distance(np.zeros(3), cov, np.array([1.0, 2.0, -2.0]), cov) == pytest.approx(9.0)


def test_isotropic_scales_give_the_closed_form():
    # N(0, a^2 I) vs N(0, b^2 I) in d dims: FD = d (a - b)^2.
    d, a, b = 5, 1.5, 0.5
    assert frechet_distance(np.zeros(d), a * a * np.eye(d), np.zeros(d), b * b * np.eye(d)) == pytest.approx(d)


def test_sample_fd_approaches_the_population_value():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4000, 2)), rng.normal(size=(4000, 2)) + np.array([3.0, 0.0])
    assert frechet_distance_features(x, y) == pytest.approx(9.0, rel=0.05)


def test_fewer_clips_than_dimensions_give_the_square_root_route_without_it():
    # 20 and 24 clips of 32-d embeddings: the samples' nuclear-norm trace against scipy's [D, D] square root.
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 32)), 0.5 * rng.normal(size=(24, 32)) @ rng.normal(size=(32, 32)) + 1.0
    want = frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
    assert frechet_distance_features(x, y) == pytest.approx(want, rel=1e-6)


def test_a_shifted_copy_of_two_wide_embeddings_gives_the_shift_exactly():
    # Two clips of 2048-d PANNs-width embeddings (rank-1 covariances): FD = ||shift||^2, no diagonal offset.
    x = np.random.default_rng(4).normal(size=(2, 2048))
    shift = np.zeros(2048)
    shift[:4] = [1.0, -2.0, 0.5, 2.0]
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance_features(x, x + shift) == pytest.approx(9.25, rel=1e-9)


def test_kl_matches_scipy_entropy_and_is_zero_on_itself():
    rng = np.random.default_rng(2)
    p, q = rng.random((6, 10)), rng.random((6, 10))
    want = [entropy(pi / pi.sum(), qi / qi.sum()) for pi, qi in zip(p, q)]
    np.testing.assert_allclose(kl_divergence(p, q), want, rtol=1e-10)
    np.testing.assert_allclose(kl_divergence(p, p), 0.0, atol=1e-12)


def test_inception_score_bounds():
    # One-hot posteriors over C distinct classes: IS = C; identical posteriors: IS = 1.
    assert inception_score(np.eye(7)) == pytest.approx(7.0, rel=1e-6)
    assert inception_score(np.tile([0.2, 0.3, 0.5], (9, 1))) == pytest.approx(1.0)


def test_too_few_clips_is_a_clear_error():
    with pytest.raises(ValueError, match="at least two clips"):
        frechet_distance_features(np.zeros((1, 4)), np.zeros((3, 4)))
