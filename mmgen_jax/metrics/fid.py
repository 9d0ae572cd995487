"""The ADM evaluator's metrics on Inception features: FID, sFID, Inception Score, precision/recall.

The numbers follow openai/guided-diffusion `evaluations/evaluator.py` (the evaluator behind the
DiT paper's table), computed from the features of `mmgen_jax.metrics.inception`:

- FID: Fréchet distance between Gaussians fitted to the 2048-d `pool` features of the samples
  and of the reference batch (`frechet.frechet_distance`, the same arithmetic).
- sFID: the same on the 2023-d `spatial` features (the first 7 channels of `mixed_6/conv`).
- Inception Score: exp(E_x KL(p(y|x) || p(y))) over consecutive splits of 5000 samples, averaged
  over splits (a smaller last split counts as one); p(y|x) is the softmax of `logits_unbiased`,
  as ADM takes the graph's logits before the bias.
- Improved precision/recall (Kynkäänniemi et al. 2019, k = 3, ADM's `ManifoldEstimator`): each
  feature set spans a manifold of balls around its points, of radius the distance to the k-th
  nearest other point of the same set; precision is the fraction of samples inside the
  reference manifold, recall the fraction of reference points inside the sample manifold.
  Distances are computed in blocks (memory bounded by the block sizes) in float32; ADM computes
  them in float16 whenever that does not overflow, which can flip points lying on a boundary.

`FeatureAccumulator` streams the features of a whole evaluation batch by batch: the Gaussian
statistics as running mean/scatter (`frechet.RunningStatistics`, O(D^2) memory) and the Inception
Score as per-split running sums (1008 numbers per split), so memory does not grow with the number
of samples. Pool features for precision/recall are appended to a raw float32 file on disk
(50K x 2048 x 4 bytes = 400 MB) and read back memory-mapped. Its state saves and restores, so an
interrupted evaluation resumes.

Reference statistics are `.npz` files with ADM's keys: `mu`, `sigma` (pool), `mu_s`, `sigma_s`
(spatial). ADM's own reference batches also hold the reference images under `arr_0` and no
activations, so precision/recall need the images run through Inception (`iterate_npz_images`);
files written by `save_reference` add the pool activations under `pool` (ADM's reader ignores
unknown keys, so they remain valid ADM reference batches).
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from mmgen_jax.metrics.frechet import RunningStatistics, frechet_distance

__all__ = [
    "FeatureAccumulator",
    "ReferenceStatistics",
    "compute_metrics",
    "inception_score",
    "iterate_npz_images",
    "load_reference",
    "manifold_radii",
    "precision_recall",
    "save_reference",
]

POOL_DIM = 2048
SPATIAL_DIM = 2023
NUM_CLASSES = 1008
IS_SPLIT_SIZE = 5000  # ADM's compute_inception_score(split_size=5000)
NEIGHBOURHOOD = 3  # k of the improved precision/recall
_STATISTICS_KEYS = ("mu", "sigma", "mu_s", "sigma_s")


# ----------------------------------------------------------------------------------------------
# Inception Score
# ----------------------------------------------------------------------------------------------


def _split_sums(logits: np.ndarray) -> tuple[np.ndarray, float]:
    """(sum over rows of p(y|x) [C], sum over rows of sum_y p log p) for logits [N, C]."""
    log_probs = special.log_softmax(np.asarray(logits, np.float64), axis=1)
    probs = np.exp(log_probs)
    return probs.sum(axis=0), float(np.sum(special.xlogy(probs, probs)))


def _score(prob_sum: np.ndarray, entropy_sum: float, count: int) -> float:
    """exp(mean KL(p(y|x) || p(y))) of one split from its running sums.

    mean_x sum_y p(y|x) (log p(y|x) - log p(y)) = mean_x sum_y p log p - sum_y p(y) log p(y),
    with p(y) the split's mean prediction.
    """
    marginal = prob_sum / count
    return float(np.exp(entropy_sum / count - np.sum(special.xlogy(marginal, marginal))))


def inception_score(logits: np.ndarray, split_size: int = IS_SPLIT_SIZE) -> float:
    """ADM's Inception Score of logits [N, C] (use the `logits_unbiased` features).

    Splits of `split_size` consecutive rows (the last one may be smaller), score per split,
    mean over splits.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be [N, C] with N > 0, got shape {logits.shape}")
    scores = []
    for start in range(0, logits.shape[0], split_size):
        part = logits[start : start + split_size]
        scores.append(_score(*_split_sums(part), part.shape[0]))
    return float(np.mean(scores))


class _RunningInceptionScore:
    """`inception_score` of a stream of logit chunks, from per-split sums (C + 2 numbers each)."""

    def __init__(self, num_classes: int, split_size: int):
        self.num_classes = num_classes
        self.split_size = split_size
        self.count = 0
        self.prob_sums = np.zeros((0, num_classes), np.float64)  # [splits, C]
        self.entropy_sums = np.zeros((0,), np.float64)  # [splits]

    def update(self, logits: np.ndarray) -> None:
        start = 0
        while start < logits.shape[0]:
            split = self.count // self.split_size
            if split == len(self.entropy_sums):
                self.prob_sums = np.concatenate([self.prob_sums, np.zeros((1, self.num_classes))])
                self.entropy_sums = np.concatenate([self.entropy_sums, np.zeros(1)])
            room = (split + 1) * self.split_size - self.count
            part = logits[start : start + room]
            prob_sum, entropy_sum = _split_sums(part)
            self.prob_sums[split] += prob_sum
            self.entropy_sums[split] += entropy_sum
            self.count += part.shape[0]
            start += part.shape[0]

    def result(self) -> float:
        if self.count == 0:
            raise ValueError("no logits were accumulated")
        counts = np.minimum(
            self.split_size, self.count - self.split_size * np.arange(len(self.entropy_sums))
        )
        scores = [
            _score(prob_sum, entropy_sum, int(count))
            for prob_sum, entropy_sum, count in zip(
                self.prob_sums, self.entropy_sums, counts, strict=True
            )
        ]
        return float(np.mean(scores))


# ----------------------------------------------------------------------------------------------
# Improved precision and recall
# ----------------------------------------------------------------------------------------------


@jax.jit
def _squared_distances(rows: jax.Array, cols: jax.Array) -> jax.Array:
    """Pairwise squared Euclidean distances [R, C] of rows [R, D] and cols [C, D] (ADM's form)."""
    precision = jax.lax.Precision.HIGHEST
    rows_sq = jnp.sum(rows * rows, axis=1)[:, None]  # [R, 1]
    cols_sq = jnp.sum(cols * cols, axis=1)[None, :]  # [1, C]
    cross = jnp.matmul(rows, cols.T, precision=precision)  # [R, C]
    return jnp.maximum(rows_sq - 2.0 * cross + cols_sq, 0.0)


def _check_features(features: np.ndarray, name: str) -> np.ndarray:
    if features.ndim != 2:
        raise ValueError(f"{name} features must be [N, D], got shape {features.shape}")
    return features


def manifold_radii(
    features: np.ndarray, k: int = NEIGHBOURHOOD, block_size: int = 10000
) -> np.ndarray:
    """Squared distance [N] from each row of `features` [N, D] to its k-th nearest other row.

    Blocks of `block_size` rows x `block_size` columns (float32, 400 MB at the default); the
    k + 1 smallest distances of each row (itself included, at distance 0) are merged across
    column blocks. `features` may be a memory-mapped array.
    """
    features = _check_features(features, "manifold")
    num = features.shape[0]
    if num <= k:
        raise ValueError(f"the k={k} nearest neighbours need more than {k} points, got {num}")
    radii = np.zeros(num, np.float32)
    for row_start in range(0, num, block_size):
        rows = jnp.asarray(features[row_start : row_start + block_size], jnp.float32)
        nearest = None  # [R, <= k + 1] smallest distances so far, ascending
        for col_start in range(0, num, block_size):
            cols = jnp.asarray(features[col_start : col_start + block_size], jnp.float32)
            distances = _squared_distances(rows, cols)  # [R, C]
            if nearest is not None:
                distances = jnp.concatenate([nearest, distances], axis=1)
            count = min(k + 1, distances.shape[1])
            nearest = -jax.lax.top_k(-distances, count)[0]
        radii[row_start : row_start + rows.shape[0]] = np.asarray(nearest[:, k])
    return radii


def precision_recall(
    reference: np.ndarray,
    samples: np.ndarray,
    k: int = NEIGHBOURHOOD,
    block_size: int = 10000,
) -> tuple[float, float]:
    """Improved (precision, recall) of `samples` [M, D] against `reference` [N, D].

    precision: fraction of samples within the k-NN ball of some reference point;
    recall: fraction of reference points within the k-NN ball of some sample (boundaries count
    as inside, as in ADM). Memory is bounded by `block_size`^2 float32 distances.
    """
    reference = _check_features(reference, "reference")
    samples = _check_features(samples, "sample")
    if reference.shape[1] != samples.shape[1]:
        raise ValueError(
            f"reference features are {reference.shape[1]}-d, sample features {samples.shape[1]}-d"
        )
    reference_radii = manifold_radii(reference, k, block_size)  # [N]
    sample_radii = manifold_radii(samples, k, block_size)  # [M]
    samples_inside = np.zeros(samples.shape[0], bool)
    reference_inside = np.zeros(reference.shape[0], bool)
    for ref_start in range(0, reference.shape[0], block_size):
        ref_block = jnp.asarray(reference[ref_start : ref_start + block_size], jnp.float32)
        ref_radii = reference_radii[ref_start : ref_start + block_size]
        for sample_start in range(0, samples.shape[0], block_size):
            sample_block = samples[sample_start : sample_start + block_size]
            distances = np.asarray(
                _squared_distances(ref_block, jnp.asarray(sample_block, jnp.float32))
            )  # [R, S]
            sample_slice = slice(sample_start, sample_start + sample_block.shape[0])
            samples_inside[sample_slice] |= np.any(distances <= ref_radii[:, None], axis=0)
            reference_inside[ref_start : ref_start + ref_block.shape[0]] |= np.any(
                distances <= sample_radii[None, sample_slice], axis=1
            )
    return float(samples_inside.mean()), float(reference_inside.mean())


# ----------------------------------------------------------------------------------------------
# Reference statistics in ADM's .npz format
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReferenceStatistics:
    """Gaussian statistics of a reference set: pool (`mu` [2048], `sigma` [2048, 2048]) and
    spatial (`mu_s` [2023], `sigma_s` [2023, 2023]); `pool` [N, 2048] activations or None."""

    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray
    sigma_s: np.ndarray
    pool: np.ndarray | None = None


def save_reference(path: str | os.PathLike, statistics: ReferenceStatistics) -> None:
    """Writes `statistics` as an ADM reference `.npz` (plus `pool` activations when present)."""
    arrays = {key: np.asarray(getattr(statistics, key)) for key in _STATISTICS_KEYS}
    if statistics.pool is not None:
        arrays["pool"] = np.asarray(statistics.pool, np.float32)
    path = os.fspath(path)
    temporary = path + ".tmp.npz"
    np.savez(temporary, **arrays)
    os.replace(temporary, path)


def load_reference(
    path: str | os.PathLike, require_activations: bool = False
) -> ReferenceStatistics:
    """Reads an ADM reference `.npz` (`mu`, `sigma`, `mu_s`, `sigma_s`, optionally `pool`).

    Raises:
      FileNotFoundError: no file at `path`.
      KeyError: a statistic is missing, or `require_activations` and there is no `pool`; the
        message names the file, the key and what the file holds.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"reference statistics not found: {path!r}")
    with np.load(path) as archive:
        keys = set(archive.files)
        missing = [key for key in _STATISTICS_KEYS if key not in keys]
        if missing:
            raise KeyError(
                f"{path}: missing {missing} (holds {sorted(keys)}); an ADM reference batch "
                "needs mu, sigma, mu_s and sigma_s"
            )
        if require_activations and "pool" not in keys:
            hint = (
                " It holds reference images under 'arr_0': run them through Inception "
                "(iterate_npz_images) to get the activations."
                if "arr_0" in keys
                else ""
            )
            raise KeyError(
                f"{path}: no 'pool' activations (holds {sorted(keys)}); precision/recall need "
                f"them.{hint}"
            )
        statistics = {key: archive[key] for key in _STATISTICS_KEYS}
        pool = archive["pool"] if "pool" in keys else None
    for key, dim in (("mu", POOL_DIM), ("mu_s", SPATIAL_DIM)):
        mean, covariance = statistics[key], statistics[key.replace("mu", "sigma")]
        if mean.ndim != 1 or covariance.shape != (mean.shape[0],) * 2:
            raise ValueError(
                f"{path}: {key} has shape {mean.shape} and its covariance "
                f"{covariance.shape}; expected [D] and [D, D] (D = {dim} for Inception)"
            )
    return ReferenceStatistics(**statistics, pool=pool)


def iterate_npz_images(
    path: str | os.PathLike, batch_size: int, key: str = "arr_0"
) -> Iterator[np.ndarray]:
    """Batches [<= batch_size, H, W, C] of the array `key` of an `.npz`, read as a stream.

    ADM's reference and sample batches keep their images under `arr_0`; a 50K batch of 256x256
    images is 10 GB, so it is read from the zip member a batch at a time (compressed or not).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image batch not found: {path!r}")
    with zipfile.ZipFile(path) as archive:
        member = f"{key}.npy"
        if member not in archive.namelist():
            names = sorted(name.removesuffix(".npy") for name in archive.namelist())
            raise KeyError(f"{path}: no array {key!r} (holds {names})")
        with archive.open(member) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"{path}: {key} is in .npy format {version}, not 1.0 or 2.0")
            shape, fortran_order, dtype = header
            if fortran_order or dtype.hasobject:
                raise ValueError(f"{path}: {key} must be a C-ordered numeric array")
            row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            for start in range(0, shape[0], batch_size):
                count = min(batch_size, shape[0] - start)
                data = stream.read(count * row_bytes)
                if len(data) != count * row_bytes:
                    raise ValueError(f"{path}: {key} ends after {start} of {shape[0]} rows")
                yield np.frombuffer(data, dtype).reshape((count, *shape[1:]))


# ----------------------------------------------------------------------------------------------
# Streaming accumulation of one evaluation
# ----------------------------------------------------------------------------------------------


class FeatureAccumulator:
    """Everything the metrics need from a stream of Inception feature batches.

    `update(features)` takes the dict of `inception.extract_features` (arrays [B, ...], any
    batch size). Memory stays flat in the number of samples: running statistics of `pool` and
    `spatial` (float64, ~65 MB for both) and per-split Inception Score sums. When
    `activations_path` is given, `pool` rows are appended to that raw float32 file (4 * 2048
    bytes per sample) for precision/recall; `activations()` maps it back read-only.

    `save(path)` writes the state (counts, means, scatters, score sums) atomically; `restore`
    rebuilds it and truncates the activations file to the restored count, so an evaluation
    interrupted between `update` and `save` resumes without duplicated rows.
    """

    def __init__(
        self,
        activations_path: str | os.PathLike | None = None,
        split_size: int = IS_SPLIT_SIZE,
        pool_dim: int = POOL_DIM,
        spatial_dim: int = SPATIAL_DIM,
        num_classes: int = NUM_CLASSES,
    ):
        self.activations_path = None if activations_path is None else os.fspath(activations_path)
        self.pool = RunningStatistics(pool_dim)
        self.spatial = RunningStatistics(spatial_dim)
        self.score = _RunningInceptionScore(num_classes, split_size)
        if self.activations_path is not None:
            open(self.activations_path, "wb").close()  # a new evaluation starts empty

    @property
    def count(self) -> int:
        return self.pool.count

    def update(self, features: Mapping[str, np.ndarray]) -> None:
        """Adds a batch: {'pool' [B, 2048], 'spatial' [B, 2023], 'logits_unbiased' [B, 1008]}."""
        missing = [k for k in ("pool", "spatial", "logits_unbiased") if k not in features]
        if missing:
            raise KeyError(f"features lack {missing}; pass the dict of extract_features")
        pool = np.asarray(features["pool"])
        spatial = np.asarray(features["spatial"])
        logits = np.asarray(features["logits_unbiased"])
        if not pool.shape[0] == spatial.shape[0] == logits.shape[0]:
            raise ValueError(
                f"features of different batch sizes: pool {pool.shape}, spatial "
                f"{spatial.shape}, logits_unbiased {logits.shape}"
            )
        self.pool.update(pool)
        self.spatial.update(spatial)
        self.score.update(logits)
        if self.activations_path is not None:
            with open(self.activations_path, "ab") as file:
                file.write(np.ascontiguousarray(pool, np.float32).tobytes())

    def statistics(self) -> ReferenceStatistics:
        """Pool and spatial Gaussian statistics (no activations attached)."""
        mu, sigma = self.pool.statistics()
        mu_s, sigma_s = self.spatial.statistics()
        return ReferenceStatistics(mu, sigma, mu_s, sigma_s)

    def inception_score(self) -> float:
        return self.score.result()

    def activations(self) -> np.ndarray:
        """Pool activations [count, 2048] read-only and memory-mapped from disk."""
        if self.activations_path is None:
            raise ValueError("activations were not kept: pass activations_path")
        if self.count == 0:
            return np.zeros((0, self.pool.dim), np.float32)
        return np.memmap(self.activations_path, np.float32, "r", shape=(self.count, self.pool.dim))

    def reference(self) -> ReferenceStatistics:
        """`statistics()` with the pool activations loaded, ready for `save_reference`."""
        statistics = self.statistics()
        pool = None if self.activations_path is None else np.array(self.activations())
        return dataclasses.replace(statistics, pool=pool)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the accumulated state to `path` (.npz) atomically."""
        path = os.fspath(path)
        temporary = path + ".tmp.npz"
        np.savez(
            temporary,
            pool_count=self.pool.count,
            pool_mean=self.pool.mean,
            pool_scatter=self.pool.scatter,
            spatial_mean=self.spatial.mean,
            spatial_scatter=self.spatial.scatter,
            split_size=self.score.split_size,
            prob_sums=self.score.prob_sums,
            entropy_sums=self.score.entropy_sums,
        )
        os.replace(temporary, path)

    @classmethod
    def restore(
        cls, path: str | os.PathLike, activations_path: str | os.PathLike | None = None
    ) -> FeatureAccumulator:
        """The accumulator saved at `path`; `activations_path` is the file it was appending to."""
        with np.load(os.fspath(path)) as state:
            accumulator = cls(
                activations_path=None,
                split_size=int(state["split_size"]),
                pool_dim=state["pool_mean"].shape[0],
                spatial_dim=state["spatial_mean"].shape[0],
                num_classes=state["prob_sums"].shape[1],
            )
            count = int(state["pool_count"])
            for running, name in ((accumulator.pool, "pool"), (accumulator.spatial, "spatial")):
                running.count = count
                running.mean = state[f"{name}_mean"].copy()
                running.scatter = state[f"{name}_scatter"].copy()
            accumulator.score.count = count
            accumulator.score.prob_sums = state["prob_sums"].copy()
            accumulator.score.entropy_sums = state["entropy_sums"].copy()
        if activations_path is not None:
            activations_path = os.fspath(activations_path)
            expected = count * accumulator.pool.dim * 4
            size = os.path.getsize(activations_path) if os.path.exists(activations_path) else 0
            if size < expected:
                raise ValueError(
                    f"{activations_path} holds {size // (accumulator.pool.dim * 4)} activation "
                    f"rows, the saved state {count}"
                )
            os.truncate(activations_path, expected)  # rows written after the last save
            accumulator.activations_path = activations_path
        return accumulator


def compute_metrics(
    samples: FeatureAccumulator,
    reference: ReferenceStatistics,
    k: int = NEIGHBOURHOOD,
    block_size: int = 10000,
) -> dict[str, float]:
    """{'fid', 'sfid', 'inception_score'} of `samples` against `reference`, plus 'precision'
    and 'recall' when both hold pool activations."""
    sample_statistics = samples.statistics()
    metrics = {
        "fid": frechet_distance(
            sample_statistics.mu, sample_statistics.sigma, reference.mu, reference.sigma
        ),
        "sfid": frechet_distance(
            sample_statistics.mu_s, sample_statistics.sigma_s, reference.mu_s, reference.sigma_s
        ),
        "inception_score": samples.inception_score(),
    }
    if reference.pool is not None and samples.activations_path is not None:
        precision, recall = precision_recall(reference.pool, samples.activations(), k, block_size)
        metrics.update(precision=precision, recall=recall)
    return metrics
