"""Quantizer math against independent numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmgen_jax.models import quantizers
from mmgen_jax.models.quantizers import FSQ, VectorQuantizer, apply_codebook_restarts


def _np_nearest(z, codebook):
    d = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    return d.argmin(-1)


def _init(module, z, **kwargs):
    return module.init({"params": jax.random.PRNGKey(0)}, z, **kwargs)


def test_nearest_code_matches_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 5, 3)).astype(np.float32)
    vq = VectorQuantizer(num_codes=16, code_dim=3)
    variables = _init(vq, z)
    codebook = np.asarray(variables["params"]["codebook"])
    out = vq.apply(variables, z)
    expected = _np_nearest(z.reshape(-1, 3), codebook).reshape(4, 5)
    np.testing.assert_array_equal(np.asarray(out.indices), expected)
    np.testing.assert_allclose(np.asarray(out.z_q), codebook[expected], rtol=1e-6, atol=1e-6)


def test_distances_are_fp32_even_for_bf16_inputs():
    # Both codes round to 1.0 in bf16 (8 mantissa bits), so a bf16 distance would tie and pick
    # code 0; in fp32 code 1 is clearly nearer to z = 1.
    codebook = np.array([[0.999], [1.0005]], np.float32)
    z = jnp.ones((1, 1), jnp.bfloat16)
    dist = quantizers.squared_distances(z, codebook)
    assert dist.dtype == jnp.float32
    vq = VectorQuantizer(num_codes=2, code_dim=1)
    out = vq.apply({"params": {"codebook": codebook}}, z)
    assert int(out.indices[0]) == 1


def test_loss_terms_and_beta_on_commitment():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 4)).astype(np.float32)
    beta = 0.25
    vq = VectorQuantizer(num_codes=8, code_dim=4, beta=beta)
    variables = _init(vq, z)
    codebook = np.asarray(variables["params"]["codebook"])
    q = codebook[_np_nearest(z, codebook)]
    out = vq.apply(variables, z)
    mse = np.mean((z - q) ** 2)
    np.testing.assert_allclose(float(out.stats["codebook_loss"]), mse, rtol=1e-5)
    np.testing.assert_allclose(float(out.stats["commitment_loss"]), mse, rtol=1e-5)
    np.testing.assert_allclose(float(out.loss), (1 + beta) * mse, rtol=1e-5)

    # Gradient w.r.t. the encoder output carries only beta * commitment: 2 beta (z - q) / n.
    grad_z = jax.grad(lambda x: vq.apply(variables, x).loss)(z)
    np.testing.assert_allclose(
        np.asarray(grad_z), 2 * beta * (z - q) / z.size, rtol=1e-4, atol=1e-7
    )

    # Gradient w.r.t. the codebook carries only the (unweighted) codebook term.
    def loss_of_codebook(cb):
        return vq.apply({"params": {"codebook": cb}}, z).loss

    grad_cb = np.asarray(jax.grad(loss_of_codebook)(jnp.asarray(codebook)))
    expected = np.zeros_like(codebook)
    for row, k in zip(z, _np_nearest(z, codebook), strict=True):
        expected[k] += 2 * (codebook[k] - row) / z.size
    np.testing.assert_allclose(grad_cb, expected, rtol=1e-4, atol=1e-7)


def test_straight_through_gradient_is_identity():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(5, 3)).astype(np.float32)
    weights = rng.normal(size=(5, 3)).astype(np.float32)
    vq = VectorQuantizer(num_codes=4, code_dim=3)
    variables = _init(vq, z)
    grad = jax.grad(lambda x: jnp.sum(vq.apply(variables, x).z_q * weights))(z)
    np.testing.assert_allclose(np.asarray(grad), weights, rtol=1e-6)


def test_ema_update_matches_numpy():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(32, 2)).astype(np.float32)
    decay, eps, k = 0.9, 1e-5, 4
    vq = VectorQuantizer(num_codes=k, code_dim=2, use_ema=True, ema_decay=decay, ema_epsilon=eps)
    variables = _init(vq, z)
    state = variables["vq_state"]
    codebook = np.asarray(state["codebook"])
    np.testing.assert_allclose(np.asarray(state["embed_sum"]), codebook)
    assert "params" not in variables or "codebook" not in variables.get("params", {})

    out, new = vq.apply(variables, z, train=True, mutable=["vq_state"])
    idx = _np_nearest(z, codebook)
    counts = np.bincount(idx, minlength=k).astype(np.float64)
    sums = np.zeros((k, 2))
    np.add.at(sums, idx, z)
    cluster = (1 - decay) * counts  # initial cluster sizes are 0
    embed = decay * codebook + (1 - decay) * sums
    n = cluster.sum()
    smoothed = (cluster + eps) / (n + k * eps) * n
    new_state = new["vq_state"]
    np.testing.assert_allclose(np.asarray(new_state["cluster_size"]), cluster, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new_state["embed_sum"]), embed, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(new_state["codebook"]), embed / smoothed[:, None], rtol=1e-4, atol=1e-5
    )
    # With an EMA codebook the loss is beta * commitment only.
    q = codebook[idx]
    np.testing.assert_allclose(float(out.loss), 0.25 * np.mean((z - q) ** 2), rtol=1e-5)


def _far_code_setup(use_ema):
    """Three codes near the data and one far away that no example will ever pick."""
    z = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.1, 0.1]], np.float32)
    codebook = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [50.0, 50.0]], np.float32)
    vq = VectorQuantizer(num_codes=4, code_dim=2, use_ema=use_ema, restart_after_steps=2)
    variables = jax.tree.map(np.asarray, _init(vq, z))
    variables = {k: dict(v) for k, v in variables.items()}
    if use_ema:
        variables["vq_state"]["codebook"] = codebook
        variables["vq_state"]["embed_sum"] = codebook.copy()
    else:
        variables["params"]["codebook"] = codebook
    return vq, z, variables


def _train_steps(vq, z, variables, steps):
    for step in range(steps):
        rngs = {quantizers.RNG_STREAM: jax.random.PRNGKey(step)}
        _, new = vq.apply(variables, z, train=True, mutable=["vq_state"], rngs=rngs)
        variables = {**variables, "vq_state": new["vq_state"]}
        if "codebook" in variables.get("params", {}):
            variables["params"] = apply_codebook_restarts(variables["params"], new)
    return variables


@pytest.mark.parametrize("use_ema", [True, False])
def test_dead_code_restart(use_ema):
    vq, z, variables = _far_code_setup(use_ema)
    after_one = _train_steps(vq, z, variables, 1)
    if not use_ema:  # not yet dead after one unused step
        np.testing.assert_allclose(np.asarray(after_one["params"]["codebook"])[3], [50.0, 50.0])
    assert int(after_one["vq_state"]["steps_since_used"][3]) == 1

    after_two = _train_steps(vq, z, variables, 2)
    cb = after_two["vq_state"]["codebook"] if use_ema else after_two["params"]["codebook"]
    restarted = np.asarray(cb)[3]
    # Re-seeded from one of the current encoder outputs.
    assert min(np.abs(restarted - row).max() for row in z) < 1e-6
    assert int(after_two["vq_state"]["steps_since_used"][3]) == 0
    # Codes in use are not touched by the restart (gradient mode: unchanged exactly).
    if not use_ema:
        np.testing.assert_array_equal(np.asarray(cb)[:3], variables["params"]["codebook"][:3])


def test_cosine_codes_pick_max_cosine_similarity():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(10, 3)).astype(np.float32) * 5
    vq = VectorQuantizer(num_codes=6, code_dim=3, cosine=True)
    variables = _init(vq, z)
    raw = np.asarray(variables["params"]["codebook"])
    unit = raw / np.linalg.norm(raw, axis=-1, keepdims=True)
    out = vq.apply(variables, z)
    zn = z / np.linalg.norm(z, axis=-1, keepdims=True)
    np.testing.assert_array_equal(np.asarray(out.indices), (zn @ unit.T).argmax(-1))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out.z_q), axis=-1), 1.0, rtol=1e-5)


def test_low_dimensional_code_space_projects_in_and_out():
    z = np.random.default_rng(5).normal(size=(2, 3, 16)).astype(np.float32)
    vq = VectorQuantizer(num_codes=8, code_dim=4, input_dim=16)
    variables = _init(vq, z)
    params = variables["params"]
    assert params["codebook"].shape == (8, 4)
    assert params["in_proj"]["kernel"].shape == (16, 4)
    out = vq.apply(variables, z)
    assert out.z_q.shape == z.shape
    # Decoding the indices reproduces the forward pass's quantized output.
    decoded = vq.apply(variables, out.indices, method=VectorQuantizer.indices_to_codes)
    np.testing.assert_allclose(np.asarray(decoded), np.asarray(out.z_q), rtol=1e-5, atol=1e-6)


def _np_fsq(z, levels):
    levels = np.asarray(levels, np.float64)
    half_l = (levels - 1) * (1 - 1e-3) / 2
    offset = np.where(levels % 2 == 1, 0.0, 0.5)
    bounded = np.tanh(z + np.tan(offset / half_l)) * half_l - offset
    return np.round(bounded) / (levels // 2)


def test_fsq_rounding_matches_numpy():
    levels = (2, 4, 5)
    z = np.random.default_rng(6).normal(size=(7, 3)).astype(np.float32) * 2
    fsq = FSQ(levels)
    out = fsq.apply({}, z)
    np.testing.assert_allclose(np.asarray(out.z_q), _np_fsq(z, levels), atol=1e-6)
    # Each channel takes exactly levels[i] distinct values over a dense sweep.
    sweep = np.linspace(-6, 6, 2001, dtype=np.float32)[:, None].repeat(3, 1)
    codes = np.asarray(fsq.apply({}, sweep).z_q)
    assert [len(np.unique(codes[:, i])) for i in range(3)] == list(levels)
    assert float(out.loss) == 0.0


def test_fsq_index_round_trip_covers_every_code():
    levels = (3, 4, 5)
    fsq = FSQ(levels)
    all_indices = jnp.arange(int(np.prod(levels)))
    grid = fsq.apply({}, all_indices, method=FSQ.indices_to_grid)
    back = fsq.apply({}, grid, method=FSQ.codes_to_indices)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(all_indices))
    assert len({tuple(row) for row in np.asarray(grid).tolist()}) == 60
    # Mixed radix with the first level varying fastest: index 1 -> digit (1, 0, 0).
    np.testing.assert_allclose(np.asarray(grid[1]), [0.0, -1.0, -1.0])


def test_fsq_straight_through_gradient():
    z = np.random.default_rng(7).normal(size=(4, 2)).astype(np.float32)
    fsq = FSQ((5, 5))
    grad = jax.grad(lambda x: jnp.sum(fsq.apply({}, x).z_q))(z)
    # d/dz of tanh(z + s) * half_l / half_width, with rounding passed straight through.
    half_l = 4 * (1 - 1e-3) / 2
    expected = (1 - np.tanh(z) ** 2) * half_l / 2
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5)


def test_quantizer_rejects_wrong_channel_count():
    vq = VectorQuantizer(num_codes=4, code_dim=3)
    with pytest.raises(ValueError, match="expects 3 channels"):
        _init(vq, np.zeros((2, 5), np.float32))


@pytest.mark.parametrize(
    "quantizer",
    [VectorQuantizer(num_codes=16, code_dim=3, input_dim=8), FSQ((3, 4, 5), input_dim=8)],
    ids=["vq", "fsq"],
)
def test_code_vectors_snap_back_to_their_indices(quantizer):
    z = np.random.default_rng(8).normal(size=(2, 5, 8)).astype(np.float32)
    variables = _init(quantizer, z)
    num_codes = 16 if isinstance(quantizer, VectorQuantizer) else 60
    indices = jnp.arange(num_codes).reshape(1, -1)
    vectors = quantizer.apply(variables, indices, method=type(quantizer).code_vectors)
    assert vectors.shape == (1, num_codes, 3)
    back = quantizer.apply(variables, vectors, method=type(quantizer).nearest_indices)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(indices))
    # A small perturbation (well inside half the smallest code spacing) snaps to the same code.
    noisy = vectors + 1e-3 * np.random.default_rng(9).normal(size=vectors.shape)
    back = quantizer.apply(variables, noisy, method=type(quantizer).nearest_indices)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(indices))


@pytest.mark.parametrize(
    "quantizer",
    [
        VectorQuantizer(num_codes=16, code_dim=3, input_dim=8),
        FSQ((3, 4, 5), input_dim=8),
        quantizers.ResidualVQ(num_stages=2, num_codes=8, code_dim=3, input_dim=8),
    ],
    ids=["vq", "fsq", "rvq"],
)
def test_project_codes_is_the_output_projection_without_snapping(quantizer):
    z = np.random.default_rng(10).normal(size=(2, 5, 8)).astype(np.float32)
    variables = _init(quantizer, z)
    shape = (1, 6, 2) if isinstance(quantizer, quantizers.ResidualVQ) else (1, 6)
    indices = jnp.asarray(np.random.default_rng(11).integers(0, 3, size=shape))
    vectors = quantizer.apply(variables, indices, method=type(quantizer).code_vectors)
    # On the codes themselves it is the lookup the decoder gets.
    np.testing.assert_allclose(
        np.asarray(quantizer.apply(variables, vectors, method=type(quantizer).project_codes)),
        np.asarray(quantizer.apply(variables, indices, method=type(quantizer).indices_to_codes)),
        rtol=1e-6,
        atol=1e-6,
    )
    # Between codes it is the affine output projection of the vector as it is.
    between = np.asarray(vectors) + 0.3
    out = variables["params"]["out_proj"]
    expected = between @ np.asarray(out["kernel"]) + np.asarray(out["bias"])
    np.testing.assert_allclose(
        np.asarray(quantizer.apply(variables, between, method=type(quantizer).project_codes)),
        expected,
        rtol=1e-5,
        atol=1e-5,
    )
