"""Fréchet distance between Gaussians fitted to features of real and generated samples.

FID (Heusel et al. 2017) fits a Gaussian to Inception features of each sample set and reports

    d^2 = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

Here the features come from any network (for the digits, `Classifier.features`); the arithmetic
follows the reference implementations (pytorch-fid, the ADM evaluator) line for line, in float64
on the host, so numbers are comparable with theirs given the same features.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

__all__ = ["RunningStatistics", "feature_statistics", "frechet_distance"]

# Tolerance on the imaginary part of diag((sigma1 sigma2)^(1/2)) that is treated as round-off,
# as in pytorch-fid; a larger one means the covariances are not valid (not PSD).
_IMAGINARY_TOLERANCE = 1e-3


def _check_features(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {features.shape}")
    return features


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """scipy's matrix square root without its singular-matrix warning.

    The reference code calls `sqrtm(..., disp=False)`, which is silent (newer scipy deprecates
    `disp`). Singular products are routine here, since post-ReLU features have dead units, and
    do no harm: a non-finite root is caught and retried with `eps` on the diagonals.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(matrix)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (ddof=1) of `features` [N, D], in float64."""
    features = _check_features(features)
    if features.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False, ddof=1)


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
      mu1, mu2: means [D].
      sigma1, sigma2: covariances [D, D].
      eps: added to both diagonals when (sigma1 sigma2)^(1/2) is not finite (singular product,
        e.g. fewer samples than feature dimensions).

    Raises:
      ValueError: if the shapes do not match, or the matrix square root has a non-negligible
        imaginary part (the inputs are not covariance matrices).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different shapes: {mu1.shape} and {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"covariances of shapes {sigma1.shape} and {sigma2.shape} do not match means of "
            f"shape {mu1.shape}"
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)  # [D, D], possibly complex
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=_IMAGINARY_TOLERANCE):
            largest = np.max(np.abs(covmean.imag))
            raise ValueError(f"matrix square root has an imaginary component of {largest}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


class RunningStatistics:
    """Mean and covariance of a stream of feature chunks, in O(D^2) memory.

    `statistics()` equals `feature_statistics` of the concatenation of every chunk passed to
    `update`, so features of many thousands of samples never have to be held at once. Each chunk
    is merged with the pairwise update of Chan et al. (count, mean, centred scatter matrix) in
    float64: unlike raw sums of x and x x^T it does not lose precision when the mean is large
    compared with the spread, as it is for non-negative (post-ReLU) features.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.count = 0
        self.mean = np.zeros(dim, np.float64)  # [D]
        self.scatter = np.zeros((dim, dim), np.float64)  # [D, D], sum of centred outer products

    def update(self, features: np.ndarray) -> None:
        """Add a chunk of feature vectors [N, D] (N may be 0)."""
        features = _check_features(features)
        if features.shape[1] != self.dim:
            raise ValueError(f"expected features [N, {self.dim}], got shape {features.shape}")
        count = features.shape[0]
        if count == 0:
            return
        chunk_mean = features.mean(axis=0)  # [D]
        centred = features - chunk_mean  # [N, D]
        delta = chunk_mean - self.mean  # [D]
        total = self.count + count
        self.scatter += centred.T @ centred + np.outer(delta, delta) * (self.count * count / total)
        self.mean += delta * (count / total)
        self.count = total

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean [D], unbiased covariance [D, D]) of every feature vector seen so far."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        return self.mean.copy(), self.scatter / (self.count - 1)
