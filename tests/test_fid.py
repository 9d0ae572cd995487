"""Tests for mmgen_jax.metrics.fid against scipy, brute-force NumPy and hand values."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import linalg
from scipy.spatial import distance

from mmgen_jax.metrics import fid
from mmgen_jax.metrics.frechet import feature_statistics, frechet_distance


def _features(num, dim, seed, shift=0.0):
    """Correlated non-negative features [num, dim], like post-ReLU Inception activations."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).standard_normal((dim, dim)) / np.sqrt(dim)
    return np.abs(rng.standard_normal((num, dim)) @ mixing + shift).astype(np.float32)


def _scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance written out directly from the formula with scipy's sqrtm."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(sigma_a @ sigma_b).real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * root))


def _batches(features, sizes):
    start = 0
    for size in sizes:
        yield features[start : start + size]
        start += size


def _accumulate(pool, spatial, logits, sizes, activations_path=None, split_size=5000):
    accumulator = fid.FeatureAccumulator(
        activations_path,
        split_size=split_size,
        pool_dim=pool.shape[1],
        spatial_dim=spatial.shape[1],
        num_classes=logits.shape[1],
    )
    for pool_batch, spatial_batch, logit_batch in zip(
        _batches(pool, sizes), _batches(spatial, sizes), _batches(logits, sizes), strict=True
    ):
        accumulator.update(
            {"pool": pool_batch, "spatial": spatial_batch, "logits_unbiased": logit_batch}
        )
    return accumulator


# FID / sFID ------------------------------------------------------------------------------------


def test_fid_of_two_halves_of_one_set_is_small_and_matches_scipy():
    features = _features(2000, 16, seed=0)
    first, second = features[:1000], features[1000:]
    shifted = _features(1000, 16, seed=1, shift=2.0)
    same = frechet_distance(*feature_statistics(first), *feature_statistics(second))
    different = frechet_distance(*feature_statistics(first), *feature_statistics(shifted))
    assert same == pytest.approx(_scipy_frechet(first, second), abs=1e-6)
    assert different == pytest.approx(_scipy_frechet(first, shifted), abs=1e-6)
    assert same < 0.02 * different


def test_accumulated_fid_and_sfid_equal_scipy_on_the_same_features():
    rng = np.random.default_rng(0)
    pool, spatial = _features(300, 12, seed=2), _features(300, 7, seed=3)
    logits = rng.standard_normal((300, 5))
    reference_pool, reference_spatial = _features(400, 12, seed=4), _features(400, 7, seed=5)
    reference = fid.ReferenceStatistics(
        *feature_statistics(reference_pool), *feature_statistics(reference_spatial)
    )
    accumulator = _accumulate(pool, spatial, logits, sizes=[1, 99, 0, 150, 50])
    metrics = fid.compute_metrics(accumulator, reference)
    assert metrics["fid"] == pytest.approx(_scipy_frechet(pool, reference_pool), abs=1e-6)
    assert metrics["sfid"] == pytest.approx(_scipy_frechet(spatial, reference_spatial), abs=1e-6)
    assert metrics["inception_score"] == pytest.approx(fid.inception_score(logits), rel=1e-12)
    assert "precision" not in metrics  # no activations kept


def test_streamed_statistics_equal_batch_statistics():
    pool, spatial = _features(257, 10, seed=6), _features(257, 4, seed=7)
    logits = np.random.default_rng(1).standard_normal((257, 6))
    accumulator = _accumulate(pool, spatial, logits, sizes=[64, 64, 64, 65])
    statistics = accumulator.statistics()
    for (mean, covariance), features in (
        ((statistics.mu, statistics.sigma), pool),
        ((statistics.mu_s, statistics.sigma_s), spatial),
    ):
        np.testing.assert_allclose(mean, features.astype(np.float64).mean(0), rtol=1e-10)
        np.testing.assert_allclose(
            covariance, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-12
        )


# Inception Score -------------------------------------------------------------------------------


def test_inception_score_hand_values():
    uniform = np.zeros((50, 10))  # every prediction is the marginal: KL = 0
    assert fid.inception_score(uniform) == pytest.approx(1.0, abs=1e-12)
    confident = np.full((40, 8), -1e4)
    confident[np.arange(40), np.arange(40) % 8] = 0.0  # one-hot, all 8 classes equally often
    assert fid.inception_score(confident) == pytest.approx(8.0, rel=1e-9)


def test_inception_score_matches_adm_formula_per_split():
    logits = np.random.default_rng(2).standard_normal((23, 6)) * 3
    expected = []
    for start in range(0, 23, 10):  # ADM: part * (log part - log mean part), mean of exp
        part = np.exp(logits[start : start + 10])
        part /= part.sum(1, keepdims=True)
        kl = np.mean(np.sum(part * (np.log(part) - np.log(part.mean(0, keepdims=True))), 1))
        expected.append(np.exp(kl))
    assert fid.inception_score(logits, split_size=10) == pytest.approx(np.mean(expected), 1e-10)
    zeros = np.zeros((23, 3))
    accumulator = _accumulate(zeros, zeros, logits, sizes=[3, 9, 0, 11], split_size=10)
    assert accumulator.inception_score() == pytest.approx(np.mean(expected), rel=1e-10)


# Precision / recall ----------------------------------------------------------------------------


def _brute_force_precision_recall(reference, samples, k=3):
    def radii(points):
        return np.sort(distance.cdist(points, points, "sqeuclidean"), axis=1)[:, k]

    cross = distance.cdist(reference, samples, "sqeuclidean")  # [N, M]
    precision = np.mean(np.any(cross <= radii(reference)[:, None], axis=0))
    recall = np.mean(np.any(cross <= radii(samples)[None, :], axis=1))
    return precision, recall


def test_manifold_radii_match_brute_force_across_blocks():
    points = np.random.default_rng(3).standard_normal((37, 5)).astype(np.float32)
    expected = np.sort(distance.cdist(points, points, "sqeuclidean"), axis=1)[:, 3]
    np.testing.assert_allclose(fid.manifold_radii(points, 3, block_size=8), expected, rtol=1e-4)


def test_precision_recall_match_brute_force():
    rng = np.random.default_rng(4)
    reference = rng.standard_normal((60, 6)).astype(np.float32)
    samples = (rng.standard_normal((45, 6)) * 0.7 + 0.8).astype(np.float32)
    expected = _brute_force_precision_recall(reference, samples)
    ours = fid.precision_recall(reference, samples, block_size=16)
    assert 0.05 < expected[0] < 0.95 and 0.05 < expected[1] < 0.95  # a non-trivial case
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_precision_recall_of_identical_and_far_apart_sets():
    points = np.random.default_rng(5).standard_normal((30, 4)).astype(np.float32)
    assert fid.precision_recall(points, points.copy()) == (1.0, 1.0)
    assert fid.precision_recall(points, points + 100.0) == (0.0, 0.0)


def test_precision_recall_from_the_disk_backed_activations(tmp_path):
    rng = np.random.default_rng(6)
    pool = rng.standard_normal((40, 6)).astype(np.float32)
    zeros = np.zeros((40, 2))
    accumulator = _accumulate(pool, zeros, zeros, [16, 16, 8], tmp_path / "pool.f32")
    np.testing.assert_array_equal(accumulator.activations(), pool)
    reference_pool = rng.standard_normal((50, 6)).astype(np.float32)
    reference = fid.ReferenceStatistics(
        *feature_statistics(reference_pool),
        *feature_statistics(np.zeros((50, 2))),
        pool=reference_pool,
    )
    metrics = fid.compute_metrics(accumulator, reference)
    expected = _brute_force_precision_recall(reference_pool, pool)
    assert (metrics["precision"], metrics["recall"]) == pytest.approx(expected)


# State, files ----------------------------------------------------------------------------------


def test_save_and_restore_resume_the_same_evaluation(tmp_path):
    rng = np.random.default_rng(7)
    pool, spatial = _features(90, 6, seed=8), _features(90, 3, seed=9)
    logits = rng.standard_normal((90, 4))
    whole = _accumulate(pool, spatial, logits, [30, 30, 30], split_size=20)
    path = tmp_path / "pool.f32"
    first = _accumulate(pool[:60], spatial[:60], logits[:60], [30, 30], path, split_size=20)
    first.save(tmp_path / "state.npz")
    first.update({"pool": pool[60:70], "spatial": spatial[60:70], "logits_unbiased": logits[:10]})
    resumed = fid.FeatureAccumulator.restore(tmp_path / "state.npz", path)  # drops those 10 rows
    resumed.update({"pool": pool[60:], "spatial": spatial[60:], "logits_unbiased": logits[60:]})
    assert resumed.count == 90
    assert resumed.inception_score() == pytest.approx(whole.inception_score(), rel=1e-12)
    np.testing.assert_allclose(resumed.statistics().sigma, whole.statistics().sigma, rtol=1e-12)
    np.testing.assert_array_equal(resumed.activations(), pool)


def test_reference_npz_round_trip_and_missing_keys(tmp_path):
    rng = np.random.default_rng(8)
    statistics = fid.ReferenceStatistics(
        rng.standard_normal(4),
        np.eye(4),
        rng.standard_normal(3),
        np.eye(3) * 2,
        pool=rng.standard_normal((5, 4)).astype(np.float32),
    )
    path = tmp_path / "reference.npz"
    fid.save_reference(path, statistics)
    loaded = fid.load_reference(path, require_activations=True)
    for key in ("mu", "sigma", "mu_s", "sigma_s", "pool"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(statistics, key))
    with np.load(path) as archive:  # ADM's reader: these four keys, nothing else needed
        assert {"mu", "sigma", "mu_s", "sigma_s"} <= set(archive.files)

    adm_batch = tmp_path / "VIRTUAL_batch.npz"
    np.savez(adm_batch, arr_0=np.zeros((2, 8, 8, 3), np.uint8), mu=np.zeros(4), sigma=np.eye(4))
    with pytest.raises(KeyError, match=r"VIRTUAL_batch.npz: missing \['mu_s', 'sigma_s'\]"):
        fid.load_reference(adm_batch)
    np.savez(
        adm_batch,
        arr_0=np.zeros((2, 8, 8, 3), np.uint8),
        mu=np.zeros(4),
        sigma=np.eye(4),
        mu_s=np.zeros(3),
        sigma_s=np.eye(3),
    )
    assert fid.load_reference(adm_batch).pool is None
    with pytest.raises(KeyError, match="no 'pool' activations.*'arr_0'"):
        fid.load_reference(adm_batch, require_activations=True)
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        fid.load_reference(tmp_path / "nowhere.npz")


@pytest.mark.parametrize("compressed", [False, True])
def test_iterate_npz_images_streams_the_array(tmp_path, compressed):
    images = np.random.default_rng(9).integers(0, 256, (11, 4, 5, 3), dtype=np.uint8)
    path = tmp_path / "samples.npz"
    (np.savez_compressed if compressed else np.savez)(path, arr_0=images, arr_1=np.arange(11))
    batches = list(fid.iterate_npz_images(path, batch_size=4))
    assert [len(batch) for batch in batches] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(batches), images)
    with pytest.raises(KeyError, match=r"no array 'images' \(holds \['arr_0', 'arr_1'\]\)"):
        next(fid.iterate_npz_images(path, 4, key="images"))


def test_accumulator_rejects_incomplete_features(tmp_path):
    accumulator = fid.FeatureAccumulator(tmp_path / "pool.f32")
    assert os.path.getsize(tmp_path / "pool.f32") == 0
    with pytest.raises(KeyError, match="logits_unbiased"):
        accumulator.update({"pool": np.zeros((1, 2048)), "spatial": np.zeros((1, 2023))})
