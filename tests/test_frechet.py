"""Tests for mmgen_jax.metrics.frechet against closed forms and numpy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mmgen_jax.metrics.frechet import RunningStatistics, feature_statistics, frechet_distance


def _gaussian_sample(num, dim, seed, shift=0.0):
    """Correlated Gaussian features [num, dim] with mean `shift` in every coordinate."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(1234).standard_normal((dim, dim)) / np.sqrt(dim)
    return rng.standard_normal((num, dim)) @ mixing + shift


def test_feature_statistics_are_numpy_mean_and_unbiased_covariance():
    features = _gaussian_sample(50, 4, seed=0).astype(np.float32)
    mu, sigma = feature_statistics(features)
    assert mu.dtype == sigma.dtype == np.float64
    reference = features.astype(np.float64)
    centred = reference - reference.mean(axis=0)
    np.testing.assert_allclose(mu, reference.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-10)


def test_identical_statistics_have_zero_distance():
    mu, sigma = feature_statistics(_gaussian_sample(500, 16, seed=0))
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_diagonal_covariances_match_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    var1, var2 = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    distance = frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    assert distance == pytest.approx(expected, rel=1e-10)


def test_running_statistics_over_chunks_equal_the_statistics_of_the_concatenation():
    # A mean large compared with the spread (as for post-ReLU features): naive sums of x and
    # x x^T lose ~1e-9 to cancellation here.
    features = _gaussian_sample(1000, 8, seed=0, shift=1000.0)
    running = RunningStatistics(8)
    for chunk in np.array_split(features, [3, 3, 250, 731]):  # includes an empty chunk
        running.update(chunk)
    mu, sigma = running.statistics()
    reference_mu, reference_sigma = feature_statistics(features)
    np.testing.assert_allclose(mu, reference_mu, rtol=0, atol=1e-10)
    np.testing.assert_allclose(sigma, reference_sigma, rtol=0, atol=1e-10)


def test_halves_of_one_sample_are_closer_than_a_shifted_sample():
    features = _gaussian_sample(20_000, 8, seed=0)
    first, second = feature_statistics(features[:10_000]), feature_statistics(features[10_000:])
    shifted = feature_statistics(_gaussian_sample(10_000, 8, seed=1, shift=0.5))
    same = frechet_distance(*first, *second)
    different = frechet_distance(*first, *shifted)
    assert different == pytest.approx(8 * 0.5**2, rel=0.1)  # the mean term dominates
    assert 0 <= same < 0.05 * different


def test_rank_deficient_covariances_give_a_finite_distance():
    # Fewer samples than dimensions: rank-deficient covariances, as with small sample sets.
    first = feature_statistics(_gaussian_sample(5, 16, seed=0))
    second = feature_statistics(_gaussian_sample(5, 16, seed=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no LinAlgWarning: the reference uses sqrtm(disp=False)
        assert np.isfinite(frechet_distance(*first, *second))


def test_shape_mismatch_is_an_error_naming_the_shapes():
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match=r"\(3,\) and \(4,\)"):
        frechet_distance(mu, sigma, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"\(3, 3\) and \(2, 2\)"):
        frechet_distance(mu, sigma, mu, np.eye(2))
    with pytest.raises(ValueError, match=r"\[N, 3\], got shape \(5, 2\)"):
        RunningStatistics(3).update(np.zeros((5, 2)))


def test_train_vs_test_baseline_matches_the_sample_count():
    """The baseline uses as many training examples as there are samples: the mean distance over
    the documented seeded subsets, larger than the whole-split distance (the O(1/N) bias)."""
    from mmgen_jax.evaluation import BASELINE_DRAWS, train_vs_test_distance

    rng = np.random.default_rng(3)
    train = rng.normal(size=(2000, 8))
    test_stats = feature_statistics(rng.normal(size=(2000, 8)))
    full = frechet_distance(*feature_statistics(train), *test_stats)
    assert train_vs_test_distance(train, test_stats, 2000) == pytest.approx(full)
    assert train_vs_test_distance(train, test_stats, 5000) == pytest.approx(full)

    draws = np.random.default_rng(0)
    subsets = [draws.choice(2000, 100, replace=False) for _ in range(BASELINE_DRAWS)]
    expected = np.mean(
        [frechet_distance(*feature_statistics(train[i]), *test_stats) for i in subsets]
    )
    small = train_vs_test_distance(train, test_stats, 100)
    assert small == pytest.approx(expected)
    # For N(0, I) in d = 8 the bias of the N = 100 estimate is ~ d / N = 0.08 (trace terms).
    assert small > full + 0.04
