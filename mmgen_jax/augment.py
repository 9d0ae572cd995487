"""Data augmentation drawn inside the jitted train step.

Augmentations run on the global batch with per-example random draws from the step's key, so
every example gets its own transform and a run gives the same numbers on any device count.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

AUGMENTATIONS = ("flip_spatial", "transpose")


def _per_example(mask: jax.Array, transformed: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), transformed, x)


def augment(x: jax.Array, rng: jax.Array, names: Sequence[str]) -> jax.Array:
    """Apply the named augmentations to a batch `x` [B, *S, C], each with probability 1/2.

    - `flip_spatial`: flip each of the last two spatial axes independently (the height and
      width of images and video frames; the time axis of audio).
    - `transpose`: swap the last two spatial axes (square images only). Together with the flips
      this draws from all 8 symmetries of the square.

    Meant for tokenizers, whose reconstruction task does not care about orientation: on small
    datasets it multiplies the distinct training inputs and curbs memorisation.
    """
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; known: {', '.join(AUGMENTATIONS)}")
    ndim = x.ndim - 2
    axes = tuple(range(max(1, ndim - 1), ndim + 1))  # the last (up to) two spatial axes
    draws = jax.random.bernoulli(rng, 0.5, (len(axes) + 1, x.shape[0]))  # [k, B]
    if "flip_spatial" in names:
        for draw, axis in zip(draws, axes, strict=False):
            x = _per_example(draw, jnp.flip(x, axis=axis), x)
    if "transpose" in names:
        if ndim < 2 or x.shape[-3] != x.shape[-2]:
            raise ValueError(f"'transpose' needs square spatial axes, got shape {x.shape}")
        swapped = jnp.swapaxes(x, -3, -2)
        x = _per_example(draws[-1], swapped, x)
    return x
