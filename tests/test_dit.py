"""DiT: shapes on 1/2/3-D inputs, official parameter counts, fixed embeddings against numpy
re-implementations of the official code, label dropout, patch layout, and the importer of the
official PyTorch weights checked against a numpy re-implementation of the official forward pass."""

import functools
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from mmgen_jax.models import dit, layers
from mmgen_jax.models.dit import DiT, make_dit
from mmgen_jax.tools import import_dit

TINY = dict(patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)
TINY_INPUT = 8


# ----------------------------------------------------------------------------------------------
# Independent references: numpy transcriptions of the official facebookresearch/DiT code
# ----------------------------------------------------------------------------------------------


def official_1d_sincos(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def official_2d_sincos(embed_dim, grid_size):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0)  # here w goes first
    grid = grid.reshape([2, 1, grid_size, grid_size])
    emb_h = official_1d_sincos(embed_dim // 2, grid[0])
    emb_w = official_1d_sincos(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def official_state_dict(seed, *, depth, hidden, patch, in_channels, input_size, num_classes):
    """Random tensors with the official key names and PyTorch shapes (learn_sigma=True)."""
    rng = np.random.default_rng(seed)
    out = 2 * in_channels

    def tensor(*shape):
        return rng.normal(0.0, 0.2, size=shape).astype(np.float32)

    state = {
        "pos_embed": official_2d_sincos(hidden, input_size // patch)[None].astype(np.float32),
        "x_embedder.proj.weight": tensor(hidden, in_channels, patch, patch),
        "x_embedder.proj.bias": tensor(hidden),
        "t_embedder.mlp.0.weight": tensor(hidden, 256),
        "t_embedder.mlp.0.bias": tensor(hidden),
        "t_embedder.mlp.2.weight": tensor(hidden, hidden),
        "t_embedder.mlp.2.bias": tensor(hidden),
        "y_embedder.embedding_table.weight": tensor(num_classes + 1, hidden),
        "final_layer.linear.weight": tensor(patch * patch * out, hidden),
        "final_layer.linear.bias": tensor(patch * patch * out),
        "final_layer.adaLN_modulation.1.weight": tensor(2 * hidden, hidden),
        "final_layer.adaLN_modulation.1.bias": tensor(2 * hidden),
    }
    for i in range(depth):
        for name, (rows, cols) in {
            "attn.qkv": (3 * hidden, hidden),
            "attn.proj": (hidden, hidden),
            "mlp.fc1": (4 * hidden, hidden),
            "mlp.fc2": (hidden, 4 * hidden),
            "adaLN_modulation.1": (6 * hidden, hidden),
        }.items():
            state[f"blocks.{i}.{name}.weight"] = tensor(rows, cols)
            state[f"blocks.{i}.{name}.bias"] = tensor(rows)
    return state


def official_forward(sd, x, t, y, *, depth, num_heads, patch):
    """The official DiT.forward (eval mode) in float64 numpy, channels-first: x [N, C, H, W]."""
    sd = {k: v.astype(np.float64) for k, v in sd.items()}

    def linear(name, h):
        return h @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    def layer_norm(h):
        mean = h.mean(-1, keepdims=True)
        return (h - mean) / np.sqrt(((h - mean) ** 2).mean(-1, keepdims=True) + 1e-6)

    def silu(h):
        return h / (1 + np.exp(-h))

    def gelu_tanh(h):
        return 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))

    def softmax(h):
        e = np.exp(h - h.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    n, c, height, width = x.shape
    hp, wp = height // patch, width // patch
    # PatchEmbed: Conv2d(kernel=stride=patch), flatten(2).transpose(1, 2).
    cols = x.reshape(n, c, hp, patch, wp, patch)
    tokens = np.einsum("nchpwq,dcpq->nhwd", cols, sd["x_embedder.proj.weight"])
    h = tokens.reshape(n, hp * wp, -1) + sd["x_embedder.proj.bias"] + sd["pos_embed"]
    half = 128
    freqs = np.exp(-math.log(10000) * np.arange(half) / half)
    args = t.astype(np.float64)[:, None] * freqs[None]
    t_freq = np.concatenate([np.cos(args), np.sin(args)], -1)
    cond = linear("t_embedder.mlp.2", silu(linear("t_embedder.mlp.0", t_freq)))
    cond = cond + sd["y_embedder.embedding_table.weight"][y]
    dim = h.shape[-1]
    head_dim = dim // num_heads
    for i in range(depth):
        b = f"blocks.{i}"
        mods = np.split(linear(f"{b}.adaLN_modulation.1", silu(cond))[:, None], 6, axis=-1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        a = layer_norm(h) * (1 + scale_msa) + shift_msa
        qkv = linear(f"{b}.attn.qkv", a).reshape(n, -1, 3, num_heads, head_dim)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # each [N, heads, T, head_dim] (timm)
        attn = softmax((q * head_dim**-0.5) @ k.transpose(0, 1, 3, 2))
        a = (attn @ v).transpose(0, 2, 1, 3).reshape(n, -1, dim)
        h = h + gate_msa * linear(f"{b}.attn.proj", a)
        m = layer_norm(h) * (1 + scale_mlp) + shift_mlp
        m = linear(f"{b}.mlp.fc2", gelu_tanh(linear(f"{b}.mlp.fc1", m)))
        h = h + gate_mlp * m
    shift, scale = np.split(linear("final_layer.adaLN_modulation.1", silu(cond))[:, None], 2, -1)
    h = linear("final_layer.linear", layer_norm(h) * (1 + scale) + shift)
    out_channels = h.shape[-1] // patch**2
    h = h.reshape(n, hp, wp, patch, patch, out_channels)
    return np.einsum("nhwpqc->nchpwq", h).reshape(n, out_channels, height, width)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _inputs(shape, num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(np.float32)
    t = rng.integers(0, 1000, size=shape[0]).astype(np.int32)
    y = rng.integers(0, num_classes, size=shape[0]).astype(np.int32) if num_classes else None
    return x, t, y


def _init(model, x, t, y=None):
    return jax.jit(model.init)(jax.random.PRNGKey(0), x, t, y)


def _apply(model, variables, x, t, y=None, **kwargs):
    """Jitted apply: one compilation instead of op-by-op dispatch keeps the file fast."""
    return np.asarray(jax.jit(functools.partial(model.apply, **kwargs))(variables, x, t, y))


def _randomized(variables, seed=1):
    """Same tree with every parameter random, so zero-initialised layers stop hiding paths."""
    rng = np.random.default_rng(seed)
    params = nn.meta.unbox(variables["params"])
    return {
        "params": jax.tree.map(lambda p: rng.normal(0, 0.2, p.shape).astype(np.float32), params)
    }


def _count(tree):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, patch_size, learn_sigma",
    [
        ((2, 16, 3), 4, True),  # audio [B, T, C]
        ((2, 8, 12, 3), 2, False),  # image [B, H, W, C], non-square
        ((2, 4, 8, 8, 3), (1, 2, 4), True),  # video [B, T, H, W, C], per-axis patch
    ],
)
def test_output_shape_and_zero_init(shape, patch_size, learn_sigma):
    model = DiT(
        patch_size=patch_size,
        in_channels=3,
        hidden_size=48,
        depth=1,
        num_heads=4,
        num_classes=5,
        learn_sigma=learn_sigma,
    )
    x, t, y = _inputs(shape, num_classes=5)
    variables = _init(model, x, t, y)
    out = _apply(model, variables, x, t, y)
    assert out.shape == shape[:-1] + (6 if learn_sigma else 3,)
    assert out.dtype == np.float32
    # adaLN-Zero: the final linear layer starts at zero, so a fresh model predicts exactly zero.
    np.testing.assert_array_equal(np.asarray(out), 0.0)


@pytest.mark.parametrize(
    "name, trainable, pos_embed",
    [("DiT-XL/2", 674_834_720, 294_912), ("DiT-S/2", 32_865_056, 98_304)],
)
def test_parameter_counts_match_official(name, trainable, pos_embed):
    """The official train.py prints sum(p.numel() for p in model.parameters()), which includes
    the frozen pos_embed [1, 256, D] (requires_grad=False): 675,129,632 for XL/2 and 32,963,360
    for S/2. Ours keeps pos_embed out of the parameters, so the trainable count is smaller by
    exactly 256 * D."""
    model = make_dit(name, in_channels=4, num_classes=1000, learn_sigma=True)
    x = jax.ShapeDtypeStruct((1, 32, 32, 4), jnp.float32)
    labels = jax.ShapeDtypeStruct((1,), jnp.int32)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, labels, labels)
    assert set(abstract) == {"params"}
    count = _count(abstract["params"])
    print(
        f"{name}: {count:,} trainable parameters, {count + pos_embed:,} with the pos_embed buffer"
    )
    assert count == trainable
    assert pos_embed == (32 // 2) ** 2 * model.hidden_size
    assert count + pos_embed == {"DiT-XL/2": 675_129_632, "DiT-S/2": 32_963_360}[name]


def test_model_zoo():
    assert len(dit.DIT_CONFIGS) == 12
    assert dit.dit_config("DiT-L/4") == dict(depth=24, hidden_size=1024, num_heads=16, patch_size=4)
    assert make_dit("DiT-B/8", num_classes=3).hidden_size == 768
    with pytest.raises(ValueError, match="DiT-M/2"):
        dit.dit_config("DiT-M/2")


@pytest.mark.parametrize("embed_dim, grid_size", [(64, 4), (1152, 16), (384, 8)])
def test_2d_pos_embed_equals_official(embed_dim, grid_size):
    ours = dit.sincos_pos_embed(embed_dim, (grid_size, grid_size))
    official = official_2d_sincos(embed_dim, grid_size).astype(np.float32)
    np.testing.assert_array_equal(ours, official)


def test_1d_and_3d_pos_embed_split_the_width_over_axes_last_axis_first():
    np.testing.assert_allclose(
        dit.sincos_pos_embed(64, (10,)), official_1d_sincos(64, np.arange(10.0)), atol=1e-6
    )
    grid = (2, 3, 4)  # (t, h, w); 1024 dims = 171 + 171 + 170 (sin, cos) pairs: w, h, t
    ours = dit.sincos_pos_embed(1024, grid).reshape(*grid, 1024)
    t_index, h_index, w_index = np.meshgrid(*map(np.arange, grid), indexing="ij")
    expected = np.concatenate(
        [
            official_1d_sincos(342, w_index.astype(np.float64)),
            official_1d_sincos(342, h_index.astype(np.float64)),
            official_1d_sincos(340, t_index.astype(np.float64)),
        ],
        axis=1,
    ).reshape(*grid, 1024)
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_timestep_embedding_matches_formula():
    t = np.array([0.0, 1.0, 17.5, 999.0])
    half = 128
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / half)
    expected = np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], axis=1)
    ours = dit.timestep_embedding(jnp.asarray(t), 256)
    np.testing.assert_allclose(np.asarray(ours), expected, atol=2e-4)  # fp32 args up to 999


def test_label_dropout_replaces_every_label_with_the_null_class():
    model = DiT(**{**TINY, "class_dropout_prob": 1.0})
    x, t, y = _inputs((4, TINY_INPUT, TINY_INPUT, 4))
    variables = _randomized(_init(model, x, t, y))
    null = np.full_like(y, TINY["num_classes"])
    rngs = {"label_dropout": jax.random.PRNGKey(3)}
    dropped = _apply(model, variables, x, t, y, train=True, rngs=rngs)
    unconditional = _apply(model, variables, x, t, null)
    np.testing.assert_allclose(dropped, unconditional, atol=1e-6)
    # Without train the labels are kept; force_drop_ids drops exactly where it is 1.
    assert not np.allclose(_apply(model, variables, x, t, y), unconditional, atol=1e-3)
    force = np.array([1, 0, 1, 0])
    forced = _apply(model, variables, x, t, y, force_drop_ids=force)
    expected = _apply(model, variables, x, t, np.where(force == 1, null, y))
    np.testing.assert_allclose(forced, expected, atol=1e-6)


def test_unconditional_model_and_label_errors():
    model = DiT(**{**TINY, "num_classes": 0})
    x, t, _ = _inputs((2, TINY_INPUT, TINY_INPUT, 4))
    variables = _init(model, x, t)
    assert "y_embedder" not in variables["params"]
    with pytest.raises(ValueError, match="unconditional"):
        _apply(model, variables, x, t, np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="needs y"):
        DiT(**TINY).init(jax.random.PRNGKey(0), x, t)


@pytest.mark.parametrize(
    "shape, patch", [((2, 12, 3), (4,)), ((2, 6, 8, 5), (3, 2)), ((1, 4, 6, 8, 2), (2, 3, 4))]
)
def test_patchify_unpatchify_round_trip(shape, patch):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    tokens = dit.patchify(jnp.asarray(x), patch)
    grid = [s // p for s, p in zip(shape[1:-1], patch, strict=True)]
    assert tokens.shape == (shape[0], math.prod(grid), math.prod(patch) * shape[-1])
    np.testing.assert_array_equal(dit.unpatchify(tokens, grid, patch, shape[-1]), x)
    # Token 1 is the second patch along the last axis; its features are (p_1, .., p_n, c).
    index = tuple(slice(0, p) for p in patch[:-1]) + (slice(patch[-1], 2 * patch[-1]),)
    second = x[(slice(None), *index)]
    np.testing.assert_array_equal(tokens[:, 1], second.reshape(shape[0], -1))


def test_patch_embedding_is_patchify_times_the_flattened_kernel():
    """The conv layout the importer relies on: kernel [p, q, C, D] == matrix [(p, q, C), D]."""
    embed = dit.PatchEmbed(hidden_size=8, patch=(2, 2))
    x = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype(np.float32)
    variables = nn.meta.unbox(embed.init(jax.random.PRNGKey(0), x))["params"]["proj"]
    expected = dit.patchify(x, (2, 2)) @ variables["kernel"].reshape(-1, 8) + variables["bias"]
    np.testing.assert_allclose(embed.apply({"params": {"proj": variables}}, x), expected, atol=1e-5)


def test_indivisible_input_is_rejected_before_compute():
    model = DiT(**TINY)
    x, t, y = _inputs((2, 7, 8, 4))
    with pytest.raises(ValueError, match=r"\(7, 8\).*\(2, 2\)"):
        _init(model, x, t, y)


def test_initialisation_follows_official():
    model = DiT(**{**TINY, "hidden_size": 256})
    x, t, y = _inputs((1, TINY_INPUT, TINY_INPUT, 4))
    params = nn.meta.unbox(_init(model, x, t, y)["params"])
    fc1 = params["blocks_0"]["mlp"]["fc1"]["kernel"]  # xavier: U(+-sqrt(6 / (256 + 1024)))
    assert np.abs(fc1).max() <= np.sqrt(6 / 1280) and np.std(fc1) == pytest.approx(
        np.sqrt(2 / 1280), rel=0.05
    )
    patch = params["x_embedder"]["proj"]["kernel"]  # xavier of [p*p*C_in, D] = [16, 256]
    assert np.abs(patch).max() <= np.sqrt(6 / (16 + 256))
    assert np.std(params["y_embedder"]["embedding_table"]) == pytest.approx(0.02, rel=0.1)
    assert np.std(params["t_embedder"]["mlp_0"]["kernel"]) == pytest.approx(0.02, rel=0.1)
    for zero in (
        params["blocks_1"]["adaLN_modulation"],
        params["final_layer"]["adaLN_modulation"],
        params["final_layer"]["linear"],
    ):
        assert all(np.all(leaf == 0) for leaf in jax.tree.leaves(zero))
    assert np.all(params["blocks_0"]["attn"]["qkv"]["bias"] == 0)


def test_logical_axis_names_bf16_and_remat():
    model = DiT(**TINY)
    x, t, y = _inputs((2, TINY_INPUT, TINY_INPUT, 4))
    variables = _init(model, x, t, y)
    specs = nn.get_partition_spec(variables)["params"]
    assert tuple(specs["blocks_0"]["mlp"]["fc1"]["kernel"]) == ("embed", "mlp")
    assert tuple(specs["blocks_0"]["attn"]["qkv"]["kernel"]) == ("embed", "heads")
    variables = _randomized(variables)
    reference = _apply(model, variables, x, t, y)
    remat = _apply(DiT(**TINY, remat=True), variables, x, t, y)
    np.testing.assert_allclose(remat, reference, atol=1e-5)
    half = _apply(DiT(**TINY, dtype=jnp.bfloat16), variables, x, t, y)
    assert half.dtype == np.float32
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(half, reference, atol=0.1 * scale)


# ----------------------------------------------------------------------------------------------
# Importer
# ----------------------------------------------------------------------------------------------

TINY_IMPORT = dict(
    input_size=TINY_INPUT,
    patch_size=2,
    in_channels=4,
    hidden_size=64,
    depth=2,
    num_heads=4,
    num_classes=10,
)


def _tiny_state_dict(seed=0):
    return official_state_dict(
        seed, depth=2, hidden=64, patch=2, in_channels=4, input_size=TINY_INPUT, num_classes=10
    )


def _largest_fusion(hlo_text: str) -> int:
    """Instruction count of the largest fused computation in optimized HLO text."""
    sizes, current = [], None
    for line in hlo_text.splitlines():
        if line.startswith("%fused_computation") or line.startswith("fused_computation"):
            current = 0
        elif current is not None and line.startswith("}"):
            sizes.append(current)
            current = None
        elif current is not None:
            current += 1
    return max(sizes)


def test_backward_work_does_not_grow_with_depth_squared():
    """With the cotangent barriers between blocks (kept on CPU by xla_flags, as the test set-up
    does for every entry point) no fused loop of the gradient step grows with depth; without
    them XLA fuses each block's residual-gradient chain into every block below it."""
    x = jnp.ones((2, 4, 4, 4))
    t = jnp.array([1, 500])
    y = jnp.array([0, 1])

    def largest(depth):
        model = DiT(
            patch_size=1, in_channels=4, hidden_size=32, depth=depth, num_heads=2, num_classes=2
        )
        params = model.init(jax.random.PRNGKey(0), x, t, y)["params"]
        grad = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x, t, y) ** 2)))
        return _largest_fusion(grad.lower(params).compile().as_text())

    assert largest(6) == largest(2)


def test_materialize_cotangent_is_the_identity_and_passes_gradients():
    x = jnp.arange(6.0).reshape(2, 3)
    fn = lambda v: jnp.sum(jnp.sin(layers.materialize_cotangent(v) * 2.0))  # noqa: E731
    np.testing.assert_array_equal(layers.materialize_cotangent(x), x)
    np.testing.assert_allclose(jax.grad(fn)(x), 2.0 * np.cos(2.0 * np.asarray(x)), rtol=1e-6)


def test_importer_maps_every_tensor():
    state = _tiny_state_dict()
    model, variables = import_dit.load_torch_dit(state, **TINY_IMPORT)
    x, t, y = _inputs((2, TINY_INPUT, TINY_INPUT, 4))
    initialised = nn.meta.unbox(_init(model, x, t, y))
    flat = traverse_util.flatten_dict(variables["params"])
    reference = traverse_util.flatten_dict(initialised["params"])
    assert set(flat) == set(reference)
    assert all(flat[k].shape == reference[k].shape for k in flat)
    assert _count(variables) == sum(v.size for k, v in state.items() if k != "pos_embed")
    params = variables["params"]
    np.testing.assert_array_equal(
        params["blocks_1"]["attn"]["qkv"]["kernel"][5, 130],
        state["blocks.1.attn.qkv.weight"][130, 5],
    )
    np.testing.assert_array_equal(
        params["x_embedder"]["proj"]["kernel"][1, 0, 3, 17],
        state["x_embedder.proj.weight"][17, 3, 1, 0],
    )
    np.testing.assert_array_equal(
        params["final_layer"]["adaLN_modulation"]["kernel"],
        state["final_layer.adaLN_modulation.1.weight"].T,
    )
    np.testing.assert_array_equal(
        params["y_embedder"]["embedding_table"], state["y_embedder.embedding_table.weight"]
    )


def test_imported_model_matches_official_forward():
    state = _tiny_state_dict()
    model, variables = import_dit.load_torch_dit(state, **TINY_IMPORT)
    x, t, y = _inputs((3, TINY_INPUT, TINY_INPUT, 4))
    y[0] = 10  # the null class
    ours = _apply(model, variables, x, t, y)  # [B, H, W, 8]
    official = official_forward(
        state, x.transpose(0, 3, 1, 2), t, y, depth=2, num_heads=4, patch=2
    ).transpose(0, 2, 3, 1)
    max_diff = np.abs(ours - official).max()
    print(
        f"max |jax - numpy official| = {max_diff:.2e} (output scale {np.abs(official).max():.2f})"
    )
    assert max_diff < 1e-4 * max(1.0, np.abs(official).max())


def test_importer_rejects_a_wrong_shape():
    state = _tiny_state_dict()
    state["blocks.1.mlp.fc1.weight"] = state["blocks.1.mlp.fc1.weight"][:, :32]
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc1\.weight.*\(256, 32\).*\(256, 64\)"):
        import_dit.load_torch_dit(state, **TINY_IMPORT)


def test_importer_rejects_missing_and_unexpected_keys():
    state = _tiny_state_dict()
    del state["blocks.0.attn.proj.bias"]
    with pytest.raises(ValueError, match=r"missing.*blocks\.0\.attn\.proj\.bias"):
        import_dit.load_torch_dit(state, **TINY_IMPORT)
    state = _tiny_state_dict()
    state["blocks.2.attn.proj.bias"] = state["blocks.1.attn.proj.bias"]  # depth 3 checkpoint
    with pytest.raises(ValueError, match=r"unexpected.*blocks\.2\.attn\.proj\.bias"):
        import_dit.load_torch_dit(state, **TINY_IMPORT)


def test_importer_rejects_a_foreign_pos_embed():
    state = _tiny_state_dict()
    grid = state["pos_embed"].reshape(4, 4, 64)
    state["pos_embed"] = grid.transpose(1, 0, 2).reshape(1, 16, 64)  # (h, w) order swapped
    with pytest.raises(ValueError, match="pos_embed"):
        import_dit.load_torch_dit(state, **TINY_IMPORT)


def test_cli_writes_a_generator_workdir_the_sampler_uses(tmp_path, monkeypatch):
    """main() on an .npz checkpoint of a tiny zoo entry (64px images -> 8x8 latents) writes a
    workdir that `inference.load_trained` restores and `mmgen_jax.sample` samples from."""
    from mmgen_jax import inference, sample

    monkeypatch.setitem(
        dit.DIT_CONFIGS, "DiT-T/2", dict(depth=2, hidden_size=64, num_heads=4, patch_size=2)
    )
    state = official_state_dict(
        0, depth=2, hidden=64, patch=2, in_channels=4, input_size=8, num_classes=1000
    )
    checkpoint = tmp_path / "tiny.npz"
    np.savez(checkpoint, **state)
    workdir = tmp_path / "work"
    argv = ["--checkpoint", str(checkpoint), "--model", "DiT-T/2", "--image-size", "64"]
    import_dit.main([*argv, "--workdir", str(workdir)])
    metadata = json.loads((workdir / "imported_dit.json").read_text())
    assert metadata["model_args"] == dict(
        depth=2,
        hidden_size=64,
        num_heads=4,
        patch_size=2,
        input_size=8,
        in_channels=4,
        num_classes=1000,
        learn_sigma=True,
        class_dropout_prob=0.1,
    )
    run = inference.load_trained(str(workdir))
    assert run.step == 0 and run.info["shape"] == (8, 8, 4)
    np.testing.assert_array_equal(
        run.variables["params"]["blocks_0"]["mlp"]["fc2"]["kernel"],
        state["blocks.0.mlp.fc2.weight"].T,
    )
    # The restored generator computes what the imported model computes.
    model, variables = import_dit.load_torch_dit(state, **metadata["model_args"])
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 4)), jnp.float32)
    t, y = jnp.array([10, 900]), jnp.array([3, 1000])
    np.testing.assert_allclose(
        run.objective.model.apply({"params": run.variables["params"]}, x, t, y),
        model.apply(variables, x, t, y),
        rtol=1e-6,
        atol=1e-6,
    )

    sample.main(["--workdir", str(workdir), "--num_samples", "2", "--steps", "3", "--tag", "s"])
    samples = np.load(workdir / "samples" / "s.npz")["samples"]
    settings = json.loads((workdir / "samples" / "s.json").read_text())
    assert samples.shape == (2, 8, 8, 4) and np.isfinite(samples).all()
    assert (settings["sampler"], settings["cfg_channels"], settings["cfg_scale"]) == (
        "ddpm",
        3,
        1.5,
    )
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        import_dit.main([*argv, "--workdir", str(workdir)])


def test_imported_config_has_the_sections_of_the_dit_config():
    from mmgen_jax import config_lib

    reference = config_lib.load_config_file("configs/dit.py")
    imported = import_dit.generator_config(
        dict(
            patch_size=2,
            hidden_size=64,
            depth=2,
            num_heads=4,
            class_dropout_prob=0.1,
            learn_sigma=True,
        )
    )

    def keys(config):
        return set(traverse_util.flatten_dict(config.to_dict()))

    assert keys(imported) == keys(reference)


def test_load_state_dict_formats(tmp_path):
    state = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    np.savez(tmp_path / "weights.npz", **state)
    loaded = import_dit.load_state_dict(str(tmp_path / "weights.npz"))
    np.testing.assert_array_equal(loaded["a.weight"], state["a.weight"])
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        import_dit.load_state_dict(str(tmp_path / "weights.bin"))
    for suffix, package in ((".safetensors", "safetensors"), (".pt", "torch")):
        try:
            __import__(package)
        except ImportError:
            with pytest.raises(ImportError, match=f"pip install {package}"):
                import_dit.load_state_dict(str(tmp_path / f"weights{suffix}"))
