"""Orbax checkpoints: exact round trip, incomplete saves never become latest, model mismatch."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmgen_jax import checkpoint as checkpoint_lib
from mmgen_jax import sharding as sharding_lib
from mmgen_jax.trainers.state import create_train_state


def _state(width=3):
    params = {"dense": {"kernel": jnp.arange(2 * width, dtype=jnp.float32).reshape(2, width)}}
    model_state = {"vq_state": {"cluster_size": jnp.array([1.0, 2.0])}}
    state = create_train_state(params, model_state, optax.adam(1e-3), jax.random.PRNGKey(7))
    return state.replace(step=jnp.array(5, jnp.int32))


def _target(state):
    mesh = sharding_lib.make_mesh()
    shardings = jax.tree.map(lambda _: sharding_lib.replicated(mesh), state)
    return checkpoint_lib.abstract_like(state, shardings)


def test_save_restore_is_identical(tmp_path):
    state = _state()
    ckpt = checkpoint_lib.Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(5, state, {"note": "x"})
    ckpt.wait()
    assert ckpt.latest_step() == 5
    restored, meta = ckpt.restore(5, _target(state))
    ckpt.close()
    assert meta["note"] == "x" and meta["step"] == 5
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.asarray(a).dtype == np.asarray(b).dtype


def test_incomplete_save_is_never_latest(tmp_path):
    state = _state()
    directory = tmp_path / "ckpt"
    ckpt = checkpoint_lib.Checkpointer(str(directory))
    ckpt.save(5, state)
    ckpt.close()
    # What a save killed midway leaves behind: a temporary step directory without commit marker.
    os.makedirs(directory / "10.orbax-checkpoint-tmp-1234" / "state")
    assert checkpoint_lib.Checkpointer(str(directory)).latest_step() == 5


def test_restore_from_a_different_model_names_the_parameter(tmp_path):
    ckpt = checkpoint_lib.Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(5, _state(width=3))
    ckpt.wait()
    other = _state(width=4)
    with pytest.raises(ValueError, match=r"'dense/kernel' has shape \(2, 3\) in the checkpoint"):
        ckpt.restore(5, _target(other))
    ckpt.close()
