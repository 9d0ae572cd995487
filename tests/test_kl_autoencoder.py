"""The KL autoencoder (SD VAE): shapes at any rank, the downsampling and attention against numpy,
the diffusers-weight importer, the frozen-tokenizer workdir and an imported DiT decoding
through it. Parity with diffusers itself is in test_kl_autoencoder_torch_parity.py (opt-in)."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from mmgen_jax.models import dit
from mmgen_jax.models.kl_autoencoder import (
    SD_VAE_CONFIG,
    SD_VAE_SCALE,
    AutoencoderKL,
    Downsample,
    MidAttention,
)
from mmgen_jax.tools import import_dit, import_sd_vae
from mmgen_jax.trainers import kl_tokenizer

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4)
# Three halvings (like the SD VAE's 8x) at the smallest widths, for the DiT end-to-end test.
TINY_8X = dict(
    block_out_channels=(8, 8, 8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4
)


def _random_params(module, shape, seed=0):
    """Random parameters of `module` for inputs of `shape`, values everywhere (norm scales and
    biases too) so that no mapping error hides behind an initialisation of ones or zeros.
    Drawn with numpy from the abstract tree: `module.init` compiles one random draw per shape,
    which costs seconds on a CPU."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    abstract = nn.meta.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), x)["params"])
    rng = np.random.default_rng(seed)

    def draw(leaf):
        if leaf.ndim == 1:
            return (0.2 + 0.5 * rng.normal(size=leaf.shape)).astype(np.float32)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree.map(draw, abstract)


def _to_state_dict(params) -> dict[str, np.ndarray]:
    """Flax parameters -> a diffusers-layout state_dict (Dense kernels of quant_conv and
    post_quant_conv as the 1x1 convolutions diffusers stores)."""
    state = {}
    for path, value in traverse_util.flatten_dict(params).items():
        key = import_sd_vae.torch_key(path)
        value = np.asarray(value)
        if value.ndim > 2:
            value = value.transpose(value.ndim - 1, value.ndim - 2, *range(value.ndim - 2))
        elif value.ndim == 2:
            value = value.T
            if key.startswith(("quant_conv", "post_quant_conv")):
                value = value[:, :, None, None]
        state[key] = np.ascontiguousarray(value)
    return state


# -- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(2, 8, 3), (2, 8, 4, 3), (1, 4, 4, 2, 3)], ids=["1d", "2d", "3d"]
)
def test_shapes_at_any_rank(shape):
    """Shapes only (traced, not run: the forward pass runs in the other tests)."""
    model = AutoencoderKL(**TINY)
    variables = {"params": _random_params(model, shape)}
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    reconstruction, mean, logvar = jax.eval_shape(model.apply, variables, x)
    latent = (shape[0], *(s // 2 for s in shape[1:-1]), 4)
    assert mean.shape == logvar.shape == latent
    assert reconstruction.shape == shape and reconstruction.dtype == jnp.float32
    assert model.downsampling_factor == 2
    assert AutoencoderKL(**SD_VAE_CONFIG).downsampling_factor == 8


def test_sd_vae_parameters_have_the_released_names_and_count():
    """The SD VAE's 248 tensors and 83,653,863 parameters, with a few keys and shapes of the
    released diffusion_pytorch_model.safetensors written out by hand."""
    model = AutoencoderKL(**SD_VAE_CONFIG)
    abstract = kl_tokenizer.abstract_params(model)
    torch_shapes = {}
    for path, value in abstract.items():
        shape = value.shape
        if len(shape) == 4:
            shape = (shape[3], shape[2], shape[0], shape[1])
        elif len(shape) == 2:
            shape = shape[::-1]
        torch_shapes[import_sd_vae.torch_key(path)] = shape
    assert len(torch_shapes) == 248
    assert sum(int(np.prod(v.shape)) for v in abstract.values()) == 83_653_863
    for key, shape in {
        "encoder.conv_in.weight": (128, 3, 3, 3),
        "encoder.down_blocks.1.resnets.0.conv_shortcut.weight": (256, 128, 1, 1),
        "encoder.down_blocks.2.downsamplers.0.conv.weight": (512, 512, 3, 3),
        "encoder.mid_block.attentions.0.to_q.weight": (512, 512),
        "encoder.conv_out.weight": (8, 512, 3, 3),
        "decoder.mid_block.attentions.0.to_out.0.bias": (512,),
        "decoder.up_blocks.2.resnets.0.conv_shortcut.weight": (256, 512, 1, 1),
        "decoder.up_blocks.3.resnets.2.conv2.weight": (128, 128, 3, 3),
        "decoder.up_blocks.2.upsamplers.0.conv.weight": (256, 256, 3, 3),
        "decoder.conv_norm_out.weight": (128,),
        "quant_conv.weight": (8, 8),  # stored as (8, 8, 1, 1), squeezed on import
        "post_quant_conv.bias": (4,),
    }.items():
        assert torch_shapes[key] == shape, key


def test_downsample_pads_the_end_of_each_axis_then_strides_by_two():
    x = np.random.default_rng(0).normal(size=(1, 6, 4, 2)).astype(np.float32)
    module = Downsample(3)
    params = _random_params(module, x.shape)
    kernel, bias = params["conv"]["kernel"], params["conv"]["bias"]  # [3, 3, 2, 3], [3]
    out = np.asarray(module.apply({"params": params}, x))
    padded = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))  # zeros after the last row and column
    reference = np.zeros((1, 3, 2, 3), np.float32)
    for i in range(3):
        for j in range(2):
            window = padded[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]  # [3, 3, 2]
            reference[0, i, j] = np.einsum("hwc,hwco->o", window, kernel) + bias
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 4, 8), (2, 6, 8)], ids=["2d", "1d"])
def test_mid_attention_is_single_head_softmax_attention_over_all_positions(shape):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32) * 2 + 1
    module = MidAttention(num_groups=4)
    params = _random_params(module, shape)
    out = np.asarray(module.apply({"params": params}, x))

    batch, channels = shape[0], shape[-1]
    groups = x.reshape(batch, -1, 4, channels // 4)  # contiguous channel groups
    normed = (groups - groups.mean(axis=(1, 3), keepdims=True)) / np.sqrt(
        groups.var(axis=(1, 3), keepdims=True) + 1e-6
    )
    h = normed.reshape(batch, -1, channels) * params["group_norm"]["scale"]
    h = h + params["group_norm"]["bias"]

    def dense(name, v):
        return v @ params[name]["kernel"] + params[name]["bias"]

    q, k, v = dense("to_q", h), dense("to_k", h), dense("to_v", h)
    logits = q @ k.transpose(0, 2, 1) / np.sqrt(channels)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    reference = x + dense("to_out", weights @ v).reshape(shape)
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4)


def test_logvar_is_clipped_like_diffusers():
    model = AutoencoderKL(**TINY)
    params = _random_params(model, (1, 4, 4, 3))
    bias = np.zeros(8, np.float32)
    bias[4:6], bias[6:] = 1e3, -1e3  # the second half of quant_conv's output is the logvar
    params["quant_conv"]["bias"] = bias
    encode = jax.jit(functools.partial(model.apply, method=model.encode))
    mean, logvar = encode({"params": params}, jnp.zeros((1, 4, 4, 3)))
    np.testing.assert_array_equal(logvar[..., :2], 20.0)
    np.testing.assert_array_equal(logvar[..., 2:], -30.0)
    assert np.abs(mean).max() < 1e2


def test_bad_inputs_are_clear_errors():
    model = AutoencoderKL(**TINY)
    variables = {"params": _random_params(model, (1, 4, 4, 3))}
    with pytest.raises(ValueError, match=r"not divisible.*factor 2"):
        model.apply(variables, jnp.zeros((1, 5, 4, 3)), method=model.encode)
    with pytest.raises(ValueError, match=r"\[B, \*spatial, 3\], got shape \(1, 4, 4, 1\)"):
        model.apply(variables, jnp.zeros((1, 4, 4, 1)), method=model.encode)
    with pytest.raises(ValueError, match=r"\[B, \*spatial, 4\], got shape \(4, 4\)"):
        model.apply(variables, jnp.zeros((4, 4)), method=model.decode)
    with pytest.raises(ValueError, match=r"norm_num_groups=3 does not divide the widths \[8, 16\]"):
        _random_params(AutoencoderKL(**{**TINY, "norm_num_groups": 3}), (1, 4, 4, 3))


# -- the importer ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_weights():
    """(params, state_dict) of the tiny model with random values everywhere."""
    params = _random_params(AutoencoderKL(**TINY), (1, 4, 4, 3))
    return params, _to_state_dict(params)


def _assert_same_params(ours, reference):
    flat, expected = traverse_util.flatten_dict(ours), traverse_util.flatten_dict(reference)
    assert set(flat) == set(expected)
    for path in expected:
        np.testing.assert_array_equal(flat[path], expected[path], err_msg="/".join(path))


def test_importer_maps_keys_and_layouts(tiny_weights):
    params, state = tiny_weights
    imported = import_sd_vae.torch_to_flax_params(state, model=AutoencoderKL(**TINY))
    _assert_same_params(imported, params)
    # Hand-checked entries: a conv, a shortcut, an attention Linear, a 1x1 quant conv, a norm.
    np.testing.assert_array_equal(
        imported["encoder"]["down_blocks_1_resnets_0"]["conv1"]["kernel"][2, 0, 5, 11],
        state["encoder.down_blocks.1.resnets.0.conv1.weight"][11, 5, 2, 0],
    )
    np.testing.assert_array_equal(
        imported["decoder"]["up_blocks_1_resnets_0"]["conv_shortcut"]["kernel"][0, 0, 13, 6],
        state["decoder.up_blocks.1.resnets.0.conv_shortcut.weight"][6, 13, 0, 0],
    )
    np.testing.assert_array_equal(
        imported["decoder"]["mid_block"]["attentions_0"]["to_out"]["kernel"][3, 9],
        state["decoder.mid_block.attentions.0.to_out.0.weight"][9, 3],
    )
    np.testing.assert_array_equal(
        imported["quant_conv"]["kernel"][7, 2], state["quant_conv.weight"][2, 7, 0, 0]
    )
    np.testing.assert_array_equal(
        imported["encoder"]["mid_block"]["attentions_0"]["group_norm"]["scale"],
        state["encoder.mid_block.attentions.0.group_norm.weight"],
    )


def test_importer_accepts_the_old_attention_keys_and_1x1_convs(tiny_weights):
    params, state = tiny_weights
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    legacy = {}
    for key, value in state.items():
        for new, old in old_names.items():
            if f".attentions.0.{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
                value = value[:, :, None, None] if value.ndim == 2 else value
        legacy[key] = value
    assert "decoder.mid_block.attentions.0.proj_attn.weight" in legacy
    imported = import_sd_vae.torch_to_flax_params(legacy, model=AutoencoderKL(**TINY))
    _assert_same_params(imported, params)


def test_importer_errors_name_the_key_and_the_shapes(tiny_weights):
    _, state = tiny_weights
    model = AutoencoderKL(**TINY)
    missing = {k: v for k, v in state.items() if k != "decoder.conv_out.bias"}
    with pytest.raises(ValueError, match=r"1 missing keys \['decoder\.conv_out\.bias'\]"):
        import_sd_vae.torch_to_flax_params(missing, model=model)
    extra = {**state, "encoder.down_blocks.2.resnets.0.conv1.bias": np.zeros(16, np.float32)}
    with pytest.raises(ValueError, match=r"unexpected keys \['encoder\.down_blocks\.2\.resnets"):
        import_sd_vae.torch_to_flax_params(extra, model=model)
    wrong = {**state, "encoder.conv_in.weight": np.zeros((8, 3, 5, 5), np.float32)}
    with pytest.raises(
        ValueError, match=r"'encoder\.conv_in\.weight'\] has shape \(8, 3, 5, 5\).*\(3, 3, 3, 8\)"
    ):
        import_sd_vae.torch_to_flax_params(wrong, model=model)


def test_importer_rejects_another_model(tiny_weights):
    dit_like = {"x_embedder.proj.weight": np.zeros((4, 4, 2, 2)), "pos_embed": np.zeros((1, 4))}
    with pytest.raises(ValueError, match="dit.npz does not hold a diffusers AutoencoderKL"):
        import_sd_vae.torch_to_flax_params(dit_like, model=AutoencoderKL(**TINY), source="dit.npz")
    compvis = {"encoder.down.0.block.0.conv1.weight": np.zeros(1)}
    with pytest.raises(ValueError, match="CompVis"):
        import_sd_vae.torch_to_flax_params(compvis, model=AutoencoderKL(**TINY))


def test_missing_weights_and_unsupported_configs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors does not exist.*sd-vae-ft"):
        import_sd_vae.locate_weights(str(tmp_path / "nope.safetensors"))
    with pytest.raises(FileNotFoundError, match="holds none of diffusion_pytorch_model"):
        import_sd_vae.locate_weights(str(tmp_path))
    with pytest.raises(ValueError, match=r"act_fn='gelu' is not supported"):
        import_sd_vae.model_args_from_diffusers_config({"act_fn": "gelu"}, "config.json")
    with pytest.raises(ValueError, match=r"up_block_types=\['AttnUpDecoderBlock2D'\]"):
        import_sd_vae.model_args_from_diffusers_config(
            {"up_block_types": ["AttnUpDecoderBlock2D"]}, "config.json"
        )


def _write_snapshot(directory, state, config, suffix):
    """A diffusers model directory: weights plus config.json, as a Hugging Face snapshot."""
    directory.mkdir()
    if suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(state, str(directory / "diffusion_pytorch_model.safetensors"))
        weights = directory
    else:
        np.savez(directory / "weights.npz", **state)
        weights = directory / "weights.npz"
    diffusers_config = {
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "down_block_types": ["DownEncoderBlock2D"] * len(config["block_out_channels"]),
        "up_block_types": ["UpDecoderBlock2D"] * len(config["block_out_channels"]),
        "in_channels": 3,
        "out_channels": 3,
        "scaling_factor": SD_VAE_SCALE,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
    }
    (directory / "config.json").write_text(json.dumps(diffusers_config))
    return str(weights)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_cli_round_trip_into_a_frozen_tokenizer(tiny_weights, tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    params, state = tiny_weights
    weights = _write_snapshot(tmp_path / "snapshot", state, TINY, suffix)
    workdir = str(tmp_path / "vae")
    import_sd_vae.main(["--weights", weights, "--workdir", workdir, "--image-size", "8"])
    model, loaded, manifest = kl_tokenizer.load_workdir(workdir)
    _assert_same_params(loaded, params)
    assert model == AutoencoderKL(**TINY)
    assert manifest["signal_shape"] == [8, 8, 3] and manifest["latent_scale"] == SD_VAE_SCALE
    with pytest.raises(FileExistsError, match="kl_autoencoder.json exists"):
        import_sd_vae.main(["--weights", weights, "--workdir", workdir])
    # The frozen tokenizer's numbers are checked in test_latent_space_uses_the_dit_scale.
    tokenizer = kl_tokenizer.FrozenKLAutoencoder(workdir)
    assert tokenizer.signal_shape == (8, 8, 3) and tokenizer.latent_shape() == (4, 4, 4)
    _assert_same_params(jax.tree.map(np.asarray, tokenizer.variables["params"]), params)
    np.testing.assert_array_equal(tokenizer.latent_norm["mean"], np.zeros(4))
    np.testing.assert_allclose(tokenizer.latent_norm["std"], 1 / 0.18215, rtol=1e-7)
    # Decoding in strided chunks (bounded memory) gives what decoding the batch whole gives.
    z = jax.random.normal(jax.random.PRNGKey(0), (8, 4, 4, 4))
    whole = tokenizer.decode(tokenizer.variables, z)
    tokenizer.decode_batch = 2
    chunked = jax.jit(tokenizer.decode)(tokenizer.variables, z)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=1e-5, atol=1e-6)


# -- an imported DiT decoding through the imported VAE ----------------------------------------

TINY_DIT = dict(depth=1, hidden_size=32, num_heads=2, patch_size=2)


def _random_dit_state_dict(latent_size, seed=0):
    """A random state_dict in the official DiT layout for the zoo entry 'DiT-T/2'."""
    model = dit.DiT(**TINY_DIT, in_channels=4, num_classes=1000, learn_sigma=True)
    x = jax.ShapeDtypeStruct((1, latent_size, latent_size, 4), jnp.float32)
    t = y = jax.ShapeDtypeStruct((1,), jnp.int32)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t, y)
    flat = traverse_util.flatten_dict(nn.meta.unbox(abstract["params"]))
    rng = np.random.default_rng(seed)
    state = {}
    for key, (path, layout) in import_dit.param_map(1, True).items():
        shape = import_dit.torch_shape(layout, flat[path].shape)
        state[key] = (rng.normal(size=shape) * 0.1).astype(np.float32)
    return state


@pytest.fixture(scope="module")
def vae_workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae8x")
    params = _random_params(AutoencoderKL(**TINY_8X), (1, 8, 8, 3), seed=3)
    weights = _write_snapshot(root / "snapshot", _to_state_dict(params), TINY_8X, ".npz")
    workdir = str(root / "vae")
    import_sd_vae.main(["--weights", weights, "--workdir", workdir, "--image-size", "32"])
    return workdir


def test_latent_space_uses_the_dit_scale(vae_workdir):
    from mmgen_jax.trainers.generator import GeneratorObjective

    config = import_dit.generator_config(
        {**TINY_DIT, "class_dropout_prob": 0.1, "learn_sigma": True}, vae_workdir
    )
    objective = GeneratorObjective(config, {"shape": (32, 32, 3), "num_classes": 1000})
    assert objective.latent_shape == (4, 4, 4)
    state = objective.frozen_variables()
    tokenizer, variables = objective.tokenizer, objective.tokenizer.variables
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3), minval=-1, maxval=1)
    z = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 4))

    @jax.jit  # one compilation instead of one per operation
    def outputs(x, z):
        latent, signal = objective.to_latent(state, x), objective.to_signal(state, z)
        unscaled = tokenizer.decode(variables, z / 0.18215)
        return latent, signal, tokenizer.encode(variables, x), unscaled

    latent, signal, mean, decoded = outputs(x, z)
    np.testing.assert_allclose(latent, mean * 0.18215, rtol=1e-6)
    np.testing.assert_allclose(signal, np.clip(decoded, -1, 1), rtol=1e-5, atol=1e-6)
    assert np.abs(decoded).max() > 1  # the clip matters: random weights overshoot [-1, 1]


def test_imported_dit_samples_pictures_through_the_vae(vae_workdir, tmp_path, monkeypatch):
    from mmgen_jax import sample

    monkeypatch.setitem(dit.DIT_CONFIGS, "DiT-T/2", TINY_DIT)
    checkpoint = tmp_path / "dit.npz"
    np.savez(checkpoint, **_random_dit_state_dict(latent_size=4))
    argv = ["--checkpoint", str(checkpoint), "--model", "DiT-T/2", "--image-size", "32"]
    workdir = tmp_path / "dit"
    import_dit.main([*argv, "--workdir", str(workdir), "--vae_workdir", vae_workdir])
    assert json.loads((workdir / "dataset_info.json").read_text())["shape"] == [32, 32, 3]

    sample.main(["--workdir", str(workdir), "--num_samples", "2", "--steps", "2", "--tag", "s"])
    samples = np.load(workdir / "samples" / "s.npz")["samples"]
    assert samples.shape == (2, 32, 32, 3) and np.abs(samples).max() <= 1.0
    assert (workdir / "samples" / "s.png").exists()
    settings = json.loads((workdir / "samples" / "s.json").read_text())
    assert settings["space"] == "latent"

    with pytest.raises(ValueError, match=r"the DiT takes \(8, 8, 4\).*--image-size"):
        import_dit.main(
            [*argv[:-1], "64", "--workdir", str(tmp_path / "bad"), "--vae_workdir", vae_workdir]
        )
