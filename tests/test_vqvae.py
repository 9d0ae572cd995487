"""VQ-VAE shapes on 1-D, 2-D and 3-D signals, index round trips and input validation."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from mmgen_jax.models import quantizers
from mmgen_jax.models.layers import ResBlock, conv
from mmgen_jax.models.vqvae import VQVAE, Decoder, Encoder, total_downsampling


def _model(quantizer, channels_out, strides=(2,)):
    return VQVAE(
        Encoder((8, 16), strides, 1, 12, num_groups=4),
        Decoder((8, 16), strides, 1, channels_out, num_groups=4),
        quantizer,
    )


QUANTIZERS = {
    "vq": lambda: quantizers.VectorQuantizer(32, 4, input_dim=12, use_ema=True),
    "vq_grad": lambda: quantizers.VectorQuantizer(32, 12),
    "fsq": lambda: quantizers.FSQ((4, 4, 2), input_dim=12),
}
SIGNALS = {
    "audio": ((2, 32, 1), (2, 16)),
    "image": ((2, 8, 8, 3), (2, 4, 4)),
    "video": ((2, 4, 8, 8, 1), (2, 2, 4, 4)),
}


@pytest.mark.parametrize("quantizer", sorted(QUANTIZERS))
@pytest.mark.parametrize("signal", sorted(SIGNALS))
def test_shapes_and_index_round_trip(quantizer, signal):
    shape, index_shape = SIGNALS[signal]
    model = _model(QUANTIZERS[quantizer](), shape[-1])
    x = np.random.default_rng(0).uniform(-1, 1, size=shape).astype(np.float32)
    variables = model.init({"params": jax.random.PRNGKey(0)}, x)
    recon, out = model.apply(variables, x)
    assert recon.shape == x.shape
    assert out.indices.shape == index_shape
    assert out.z_q.shape == (*index_shape, 12)
    # Decoding the indices is the same as decoding the straight-through latents.
    indices = model.apply(variables, x, method=VQVAE.encode_to_indices)
    from_indices = model.apply(variables, indices, method=VQVAE.decode_indices)
    np.testing.assert_allclose(np.asarray(from_indices), np.asarray(recon), rtol=1e-4, atol=1e-5)


def test_per_axis_strides_keep_time_resolution():
    model = _model(QUANTIZERS["fsq"](), 1, strides=((1, 2, 2),))
    x = np.zeros((1, 4, 8, 8, 1), np.float32)
    variables = model.init({"params": jax.random.PRNGKey(0)}, x)
    recon, out = model.apply(variables, x)
    assert out.indices.shape == (1, 4, 4, 4)
    assert recon.shape == x.shape
    assert total_downsampling([(1, 2, 2), 2], 3) == (2, 4, 4)


def test_conv_with_unit_leading_kernel_is_the_per_frame_conv():
    """A (1, 3, 3) video conv runs as a 2-D conv over frames folded into the batch: it must
    equal the 3-D convolution with that kernel, and its stride applies to the trailing axes."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 6, 6, 4)).astype(np.float32)
    layer = conv(5, 3, (1, 3, 3), (1, 2, 2))
    variables = nn.unbox(layer.init(jax.random.PRNGKey(0), x))
    kernel = np.asarray(variables["params"]["kernel"])
    assert kernel.shape == (3, 3, 4, 5)  # the unit axis is not stored
    bias = rng.normal(size=5).astype(np.float32)
    variables = {"params": {"kernel": kernel, "bias": bias}}
    got = np.asarray(layer.apply(variables, x))
    want = jax.lax.conv_general_dilated(
        x, kernel[None], (1, 2, 2), "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
    )
    np.testing.assert_allclose(got, np.asarray(want) + bias, rtol=1e-5, atol=1e-5)
    assert got.shape == (2, 3, 3, 3, 5)

    # A kernel of 1 along a trailing axis (or a stride there) keeps the full-rank kernel.
    def kernel_shape(layer):
        return nn.unbox(layer.init(jax.random.PRNGKey(0), x))["params"]["kernel"].shape

    assert kernel_shape(conv(5, 3, (3, 1, 3))) == (3, 1, 3, 4, 5)
    assert kernel_shape(conv(5, 3, (1, 3, 3), (2, 1, 1))) == (1, 3, 3, 4, 5)
    with pytest.raises(ValueError, match=r"kernel \(1, 3\) and stride \(1, 1, 1\) need 3 axes"):
        conv(5, 3, (1, 3))


def test_per_frame_vqvae_never_mixes_frames():
    """With kernel_size (1, 3, 3) and no temporal stride every conv is 2-D over frames, and
    permuting a clip's frames permutes its reconstruction's frames (GroupNorm's statistics span
    the clip but are permutation invariant); a conv mixing neighbouring frames breaks this."""
    kernel = (1, 3, 3)
    model = VQVAE(
        Encoder((8,), (), 1, 12, num_groups=1, kernel_size=kernel),
        Decoder((8,), (), 1, 1, num_groups=1, kernel_size=kernel),
        QUANTIZERS["fsq"](),
    )
    x = np.random.default_rng(0).uniform(-1, 1, size=(1, 4, 8, 8, 1)).astype(np.float32)
    variables = nn.unbox(model.init({"params": jax.random.PRNGKey(0)}, x))
    flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    convs = {
        jax.tree_util.keystr(path): v.shape[:-2]
        for path, v in flat
        if "kernel" in jax.tree_util.keystr(path) and "quantizer" not in jax.tree_util.keystr(path)
    }
    # Every 3x3 conv is 2-D over frames; the 1x1 projection keeps its full-rank shape.
    assert sorted(convs.values()) == [(1, 1, 1)] + [(3, 3)] * 7, convs
    perm = np.array([2, 0, 3, 1])
    recon, _ = model.apply(variables, x)
    recon_perm, _ = model.apply(variables, x[:, perm])
    np.testing.assert_allclose(np.asarray(recon_perm), np.asarray(recon)[:, perm], atol=1e-5)


def test_kernel_size_of_the_wrong_rank_is_named_in_the_error():
    model = VQVAE(
        Encoder((8,), (), 1, 12, num_groups=4, kernel_size=(1, 3)),
        Decoder((8,), (), 1, 1, num_groups=4, kernel_size=(1, 3)),
        QUANTIZERS["fsq"](),
    )
    with pytest.raises(ValueError, match=r"kernel_size \(1, 3\) has 2 axes, the input has 3"):
        model.init({"params": jax.random.PRNGKey(0)}, np.zeros((1, 2, 8, 8, 1), np.float32))


def test_input_not_divisible_by_downsampling_is_a_clear_error():
    model = _model(QUANTIZERS["fsq"](), 1, strides=(2,))
    with pytest.raises(ValueError, match=r"not divisible by the total downsampling factor 2"):
        model.init({"params": jax.random.PRNGKey(0)}, np.zeros((1, 7, 8, 1), np.float32))


def test_resblock_skip_projects_the_block_input():
    """The 1x1 skip must see the input x (MaskGIT's released code applied it to h)."""
    block = ResBlock(features=6, num_groups=2)
    x = np.random.default_rng(1).normal(size=(1, 4, 4, 3)).astype(np.float32)
    variables = nn.meta.unbox(block.init(jax.random.PRNGKey(0), x))  # drop logical-axis boxes
    params = jax.tree.map(np.asarray, variables["params"])
    # Zero the residual branch's last conv: the output must equal the projected input exactly.
    last_conv = sorted(k for k in params if k.startswith("Conv"))[-1]
    params[last_conv] = {k: np.zeros_like(v) for k, v in params[last_conv].items()}
    out = np.asarray(block.apply({"params": params}, x))
    skip = params["skip"]
    expected = x @ skip["kernel"][0, 0] + skip["bias"]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_code_vector_latents_decode_like_indices(quantizer):
    """The generator's latent API: code-space vectors decode to the same signal as the indices."""
    model = _model(QUANTIZERS[quantizer](), 1)
    x = np.random.default_rng(2).uniform(-1, 1, size=(2, 8, 8, 1)).astype(np.float32)
    variables = model.init({"params": jax.random.PRNGKey(0)}, x)
    vectors = model.apply(variables, x, method=VQVAE.encode_to_code_vectors)
    assert vectors.shape == (2, 4, 4, 4 if quantizer == "vq" else 3)
    decoded = model.apply(variables, vectors, method=VQVAE.decode_code_vectors)
    recon, _ = model.apply(variables, x)
    np.testing.assert_allclose(np.asarray(decoded), np.asarray(recon), rtol=1e-4, atol=1e-5)
