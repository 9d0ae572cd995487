"""Training batches drawn from arrays in memory (`data/arrays.py`)."""

import itertools

import jax
import numpy as np
import pytest

from mmgen_jax import sharding as sharding_lib
from mmgen_jax.data import arrays


def _take(iterator, count):
    return [
        {k: np.asarray(v) for k, v in batch.items()} for batch in itertools.islice(iterator, count)
    ]


def test_every_epoch_visits_each_example_once_in_a_new_order():
    # 10 examples, batches of 4: steps 0-4 are 20 indices = two whole epochs back to back.
    drawn = np.concatenate([arrays.batch_indices(10, 4, seed=3, step=s) for s in range(5)])
    first, second = drawn[:10], drawn[10:]
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert not np.array_equal(first, second)
    other_seed = np.concatenate([arrays.batch_indices(10, 4, seed=4, step=s) for s in range(3)])
    assert not np.array_equal(other_seed[:10], first)


def test_batches_are_the_arrays_rows_and_resume_exactly():
    data = {
        "latent": np.arange(13 * 2 * 3, dtype=np.float32).reshape(13, 2, 3),
        "label": np.arange(13, dtype=np.int32) * 10,
    }
    sharding = sharding_lib.batch_sharding(sharding_lib.make_mesh())
    batches = _take(
        arrays.make_train_iterator(data, global_batch_size=8, sharding=sharding, seed=0), 5
    )
    for batch in batches:
        rows = batch["label"] // 10  # the example index each row came from
        np.testing.assert_array_equal(batch["latent"], data["latent"][rows])
        assert batch["latent"].shape == (8, 2, 3)
    resumed = _take(
        arrays.make_train_iterator(
            data, global_batch_size=8, sharding=sharding, seed=0, start_step=3
        ),
        2,
    )
    for got, want in zip(resumed, batches[3:], strict=True):
        np.testing.assert_array_equal(got["latent"], want["latent"])


def test_batches_are_the_same_on_one_device_and_eight():
    data = {"latent": np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)}
    one = sharding_lib.batch_sharding(sharding_lib.make_mesh(devices=jax.devices()[:1]))
    eight = sharding_lib.batch_sharding(sharding_lib.make_mesh())
    a = _take(arrays.make_train_iterator(data, global_batch_size=8, sharding=one, seed=1), 4)
    b_iter = arrays.make_train_iterator(data, global_batch_size=8, sharding=eight, seed=1)
    first = next(b_iter)
    assert len(first["latent"].sharding.device_set) == 8
    b = [{k: np.asarray(v) for k, v in first.items()}] + _take(b_iter, 3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["latent"], y["latent"])


def test_arrays_of_different_lengths_are_an_error():
    sharding = sharding_lib.batch_sharding(sharding_lib.make_mesh())
    data = {"latent": np.zeros((5, 2)), "label": np.zeros(4)}
    with pytest.raises(ValueError, match="different lengths"):
        next(arrays.make_train_iterator(data, global_batch_size=8, sharding=sharding, seed=0))
