"""Codebook health metrics for vector-quantised tokenizers.

A VQ-VAE whose encoder outputs collapse onto a few codes still reconstructs tolerably but wastes
capacity and starves the stage-2 generator of vocabulary, so training logs how much of the
codebook is in use. The split is deliberate: ``code_histogram`` is jit-able and runs inside the
eval step (the histogram is summed across the whole global batch there, so every replica sees
the same counts), while ``codebook_metrics`` turns the accumulated histogram into a few numbers
on the host once per evaluation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["code_histogram", "codebook_metrics"]


def code_histogram(indices: jax.Array, num_codes: int, mask: jax.Array | None = None) -> jax.Array:
    """Counts how often each code is used.

    Args:
      indices: integer code indices of any shape ``[B, ...]`` (e.g. ``[B, h, w]`` for images,
        ``[B, t]`` for audio, ``[B, h, w, depth]`` for residual VQ), values in ``[0, num_codes)``;
        out-of-range values are dropped.
      num_codes: codebook size ``K`` (static under jit).
      mask: optional ``[B]`` weights (1 = real example, 0 = padding added to fill the last
        batch); each example's weight applies to all of its codes.

    Returns:
      ``[K]`` float32 counts (weighted by ``mask`` when given).
    """
    indices = jnp.asarray(indices)
    if mask is None:
        weights = jnp.ones(indices.shape, jnp.float32)
    else:
        mask = jnp.asarray(mask, jnp.float32)  # [B]
        # [B] -> [B, 1, ..., 1] -> indices.shape: one weight per code of each example.
        per_example = mask.reshape(mask.shape + (1,) * (indices.ndim - 1))
        weights = jnp.broadcast_to(per_example, indices.shape)
    return jnp.bincount(indices.reshape(-1), weights=weights.reshape(-1), length=num_codes).astype(
        jnp.float32
    )  # [K]


def codebook_metrics(counts: np.ndarray | jax.Array) -> dict[str, float | int]:
    """Summarises a code histogram.

    Args:
      counts: ``[K]`` non-negative (possibly weighted) code counts, e.g. from ``code_histogram``
        summed over an evaluation.

    Returns:
      ``codebook_usage``: fraction of the ``K`` codes with a count > 0, in [0, 1].
      ``perplexity``: ``exp(H)`` with ``H = -sum p log p`` (natural log) of the normalised
        histogram; the effective number of equally used codes, between 1 and ``K``. Defined as 0
        for an empty histogram (nothing was encoded).
      ``dead_codes``: number of codes with count 0 (an int).
    """
    counts = np.asarray(jax.device_get(counts), dtype=np.float64).reshape(-1)  # [K]
    if np.any(counts < 0):
        raise ValueError("counts must be non-negative")
    num_codes = counts.size
    used = counts > 0
    total = counts.sum()
    if total > 0:
        probabilities = counts[used] / total
        entropy = -np.sum(probabilities * np.log(probabilities))
        perplexity = float(np.exp(entropy))
    else:
        perplexity = 0.0
    return {
        "codebook_usage": float(used.sum() / num_codes) if num_codes else 0.0,
        "perplexity": perplexity,
        "dead_codes": int(num_codes - used.sum()),
    }
