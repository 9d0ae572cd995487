"""Training batches from arrays held in memory (e.g. a tokenizer's latents, encoded once).

A latent generator whose tokenizer is frozen sees every training example through the same
encoder pass, epoch after epoch; on a small dataset that pass can cost as much as the DiT step
(a third to a half of the step for the video quickstart on a CPU). `make_train_iterator` serves
batches from arrays encoded once instead, with the guarantees of `pipeline.make_train_iterator`:

- the order is a pure function of (seed, global batch size): epoch e visits the examples in the
  permutation `default_rng((seed, e))` draws, epochs follow each other without a gap, and
  `start_step=k` yields exactly what a fresh iterator yields from its k-th batch on;
- every process holds all the arrays and keeps its rows of each global batch, so the global
  batches are the same for any number of processes and devices.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping

import jax
import numpy as np

from mmgen_jax.data import pipeline


@functools.lru_cache(maxsize=2)  # a batch spans at most the current epoch and the next
def _epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng((seed, epoch)).permutation(num_examples)


def batch_indices(num_examples: int, global_batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices of global batch `step` (0-based): [global_batch_size] int64."""
    if num_examples < 1:
        raise ValueError("cannot draw batches from zero examples")
    start = step * global_batch_size
    epoch, offset = divmod(start, num_examples)
    indices = []
    while len(indices) < global_batch_size:
        order = _epoch_order(num_examples, seed, epoch)
        indices.extend(order[offset : offset + global_batch_size - len(indices)])
        epoch, offset = epoch + 1, 0
    return np.asarray(indices, np.int64)


def make_train_iterator(
    arrays: Mapping[str, np.ndarray],
    *,
    global_batch_size: int,
    sharding: jax.sharding.NamedSharding,
    seed: int,
    start_step: int = 0,
) -> Iterator[dict[str, jax.Array]]:
    """An endless iterator of shuffled global batches of `arrays` (all with the same length).

    Yields:
      `{name: [global_batch_size, *arrays[name].shape[1:]]}` global `jax.Array`s, the batch
      dimension sharded like `sharding`.
    """
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays of different lengths: {lengths}")
    num_examples = next(iter(lengths.values()))
    local = pipeline.process_batch_size(global_batch_size, sharding)
    rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
    step = start_step
    while True:
        indices = batch_indices(num_examples, global_batch_size, seed, step)[rows]
        local_batch = {name: array[indices] for name, array in arrays.items()}
        yield pipeline.global_batch(local_batch, sharding, global_batch_size)
        step += 1
