"""In-step augmentation: every output is a symmetry of its own input, drawn per example."""

import jax
import numpy as np
import pytest

from mmgen_jax.augment import augment


def _dihedral(image):
    """The 8 symmetries of a square [H, W, C] image, by numpy."""
    out = []
    for transposed in (image, np.swapaxes(image, 0, 1)):
        for flip_h in (False, True):
            for flip_w in (False, True):
                x = transposed[::-1] if flip_h else transposed
                out.append(x[:, ::-1] if flip_w else x)
    return out


def test_each_example_gets_its_own_square_symmetry():
    x = np.random.default_rng(0).normal(size=(64, 5, 5, 2)).astype(np.float32)
    y = np.asarray(augment(x, jax.random.PRNGKey(3), ("flip_spatial", "transpose")))
    chosen = []
    for inp, out in zip(x, y, strict=True):
        matches = [i for i, t in enumerate(_dihedral(inp)) if np.array_equal(t, out)]
        assert matches, "output is not a symmetry of its input"
        chosen.append(matches[0])
    assert len(set(chosen)) >= 6  # per-example draws, not one transform for the whole batch
    again = np.asarray(augment(x, jax.random.PRNGKey(3), ("flip_spatial", "transpose")))
    np.testing.assert_array_equal(y, again)


def test_no_augmentation_is_identity_and_unknown_names_fail():
    x = np.ones((2, 4, 4, 1), np.float32)
    np.testing.assert_array_equal(np.asarray(augment(x, jax.random.PRNGKey(0), ())), x)
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment(x, jax.random.PRNGKey(0), ("rotate",))
    with pytest.raises(ValueError, match="square"):
        augment(np.ones((2, 4, 6, 1), np.float32), jax.random.PRNGKey(0), ("transpose",))


def test_audio_flips_time():
    x = np.arange(2 * 6, dtype=np.float32).reshape(2, 6, 1)
    y = np.asarray(augment(x, jax.random.PRNGKey(1), ("flip_spatial",)))
    for inp, out in zip(x, y, strict=True):
        assert np.array_equal(out, inp) or np.array_equal(out, inp[::-1])
