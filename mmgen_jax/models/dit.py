"""Diffusion Transformer (DiT, Peebles & Xie 2023) with adaLN-Zero blocks and N-d patches.

A faithful Flax port of the official implementation (facebookresearch/DiT, `models.py`): the same
layers, the same initialisation and, for images, the same numbers, so that the released PyTorch
weights can be imported (`mmgen_jax.tools.import_dit`). One generalisation: patchify works on any
channels-last rank, audio `[B, T, C]`, images `[B, H, W, C]` and video `[B, T, H, W, C]`, with an
int or per-axis patch size, and the fixed sin-cos position embedding is extended to N-d
(`sincos_pos_embed`).

Parameter tree (names mirror the official `state_dict` keys):
  x_embedder/proj/{kernel [*patch, C_in, D], bias}
  t_embedder/mlp_0, t_embedder/mlp_2               Linear 256 -> D, D -> D
  y_embedder/embedding_table [num_classes + 1, D]  last row: the null class (if dropout > 0)
  blocks_{i}/attn/{qkv, proj}, blocks_{i}/mlp/{fc1, fc2}, blocks_{i}/adaLN_modulation
  final_layer/{adaLN_modulation, linear}

Kernels carry logical axis names (`nn.with_logical_partitioning`) so a mesh plus rules can shard
them (FSDP); without rules the annotations are inert metadata and `init`/`apply` work as usual.
The vocabulary is 'embed' (the hidden width D), 'heads' (the attention projections) and 'mlp'
(the MLP width and the adaLN modulation outputs); a name without a rule stays replicated.

Precision: parameters are fp32; matmuls run in `dtype`; layer norms, the attention softmax and
the residual stream stay fp32 (the adaLN-Zero gates start at zero, so early updates to the
residual stream are tiny and would be rounded away in bf16); the output is fp32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmgen_jax.models.layers import constrain_activation, materialize_cotangent

PatchSize = int | Sequence[int]

FREQUENCY_EMBEDDING_SIZE = 256  # timestep frequency features fed to the timestep MLP
LAYER_NORM_EPSILON = 1e-6

# Model zoo of the paper (Table 1): depth / hidden width / heads per size, times patch 2, 4, 8.
_SIZES = {
    "S": {"depth": 12, "hidden_size": 384, "num_heads": 6},
    "B": {"depth": 12, "hidden_size": 768, "num_heads": 12},
    "L": {"depth": 24, "hidden_size": 1024, "num_heads": 16},
    "XL": {"depth": 28, "hidden_size": 1152, "num_heads": 16},
}
DIT_CONFIGS: dict[str, dict[str, int]] = {
    f"DiT-{size}/{patch}": {**dims, "patch_size": patch}
    for size, dims in _SIZES.items()
    for patch in (2, 4, 8)
}


def dit_config(name: str) -> dict[str, int]:
    """Architecture arguments (depth, hidden_size, num_heads, patch_size) of a zoo model."""
    if name not in DIT_CONFIGS:
        raise ValueError(f"unknown DiT model {name!r}; choose one of {sorted(DIT_CONFIGS)}")
    return dict(DIT_CONFIGS[name])


def make_dit(name: str, **overrides: Any) -> DiT:
    """A zoo model, e.g. `make_dit('DiT-S/2', num_classes=10, dtype=jnp.bfloat16)`."""
    return DiT(**{**dit_config(name), **overrides})


# ----------------------------------------------------------------------------------------------
# Initialisers (as in the official `initialize_weights`)
# ----------------------------------------------------------------------------------------------

xavier_uniform = nn.initializers.xavier_uniform()
zeros = nn.initializers.zeros
normal_002 = nn.initializers.normal(stddev=0.02)


def patch_kernel_init(spatial_ndim: int) -> nn.initializers.Initializer:
    """Xavier-uniform of the conv kernel `[*patch, C_in, D]` viewed as a `[prod(patch)*C_in, D]`
    matrix, as the official code does ("initialize patch_embed like nn.Linear"); Flax's own
    xavier for convs would also multiply the fan-out by the patch volume."""
    return nn.initializers.variance_scaling(
        1.0, "fan_avg", "uniform", in_axis=tuple(range(spatial_ndim + 1)), out_axis=-1
    )


def patch_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default Conv bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)): the official code
    re-initialises only Linear biases (to zero) and leaves the patch-embedding bias as is."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def dense(
    features: int,
    names: tuple[str | None, str | None],
    dtype: Any,
    name: str,
    kernel_init: nn.initializers.Initializer = xavier_uniform,
) -> nn.Dense:
    """Linear layer with a logically-partitioned kernel and a zero bias (official `_basic_init`)."""
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(kernel_init, names),
        bias_init=zeros,
        name=name,
    )


# ----------------------------------------------------------------------------------------------
# Fixed embeddings and patch layout
# ----------------------------------------------------------------------------------------------


def _sincos_1d(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    """`[sin(pos * w), cos(pos * w)]`, w_k = 10000^(-k / (embed_dim / 2)): [M] -> [M, embed_dim].

    Same arithmetic as the official `get_1d_sincos_pos_embed_from_grid` (float64 frequencies).
    """
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega  # [embed_dim / 2]
    angles = np.einsum("m,d->md", positions.reshape(-1), omega)  # [M, embed_dim / 2]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_pos_embed(embed_dim: int, grid_shape: Sequence[int]) -> np.ndarray:
    """Fixed N-d sin-cos position embedding of a token grid: -> [prod(grid_shape), embed_dim].

    Tokens are in row-major order of `grid_shape`. The embedding is a concatenation of one 1-D
    sin-cos embedding per grid axis, **last axis first**: for 2-D `(h, w)` grids the first half
    encodes the column w and the second half the row h, which is exactly the official
    `get_2d_sincos_pos_embed` (its `np.meshgrid(grid_w, grid_h)` puts w first). For 1-D the whole
    width encodes time; for 3-D `(t, h, w)` the parts are (w, h, t). The `embed_dim / 2` (sin,
    cos) pairs are shared out as evenly as possible, earlier parts taking one extra pair when
    they do not divide (hidden 1024 on a 3-D grid: 342 + 342 + 340 dims).
    """
    ndim = len(grid_shape)
    if embed_dim % 2 or embed_dim < 2 * ndim:
        raise ValueError(
            f"sin-cos position embedding needs an even width >= {2 * ndim} for a {ndim}-D "
            f"grid, got {embed_dim}"
        )
    pairs = embed_dim // 2
    part_dims = [2 * (pairs // ndim + (part < pairs % ndim)) for part in range(ndim)]
    # coordinates[axis] holds each token's index along `axis`: [*grid_shape].
    coordinates = np.meshgrid(
        *[np.arange(size, dtype=np.float32) for size in grid_shape], indexing="ij"
    )
    parts = [
        _sincos_1d(dim, coordinates[axis])
        for dim, axis in zip(part_dims, reversed(range(ndim)), strict=True)
    ]
    return np.concatenate(parts, axis=1).astype(np.float32)


def timestep_embedding(
    t: jnp.ndarray, dim: int = FREQUENCY_EMBEDDING_SIZE, max_period: float = 10000.0
) -> jnp.ndarray:
    """Sinusoidal timestep features `[cos(t * f), sin(t * f)]`: [B] -> [B, dim].

    Cosines first, as the official (GLIDE) code; f_k = max_period^(-k / (dim // 2)); timesteps
    may be fractional. An odd `dim` gets a zero
    last column, as in the official code.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)  # [half]
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]  # [B, half]
    embedding = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        embedding = jnp.concatenate([embedding, jnp.zeros_like(embedding[:, :1])], axis=-1)
    return embedding


def patch_shape(patch_size: PatchSize, spatial_ndim: int) -> tuple[int, ...]:
    """Per-axis patch size for an input with `spatial_ndim` spatial axes."""
    if isinstance(patch_size, int):
        return (patch_size,) * spatial_ndim
    if len(patch_size) != spatial_ndim:
        raise ValueError(
            f"patch_size {tuple(patch_size)} has {len(patch_size)} axes but the input has "
            f"{spatial_ndim} spatial axes"
        )
    return tuple(int(p) for p in patch_size)


def patchify(x: jnp.ndarray, patch: Sequence[int]) -> jnp.ndarray:
    """[B, *S, C] -> [B, N, prod(patch) * C] with N = prod(S / patch) tokens in row-major order.

    Each token's features are laid out (p_1, ..., p_n, c), c fastest: the layout of the official
    final layer's output, and of the patch-embedding conv kernel flattened to a matrix.
    """
    batch, *spatial, channels = x.shape
    ndim = len(spatial)
    grid = [s // p for s, p in zip(spatial, patch, strict=True)]
    split = [d for g, p in zip(grid, patch, strict=True) for d in (g, p)]
    x = x.reshape(batch, *split, channels)  # [B, g_1, p_1, ..., g_n, p_n, C]
    order = [0, *range(1, 2 * ndim, 2), *range(2, 2 * ndim + 1, 2), 2 * ndim + 1]
    x = x.transpose(order)  # [B, g_1, ..., g_n, p_1, ..., p_n, C]
    return x.reshape(batch, math.prod(grid), math.prod(patch) * channels)


def unpatchify(
    tokens: jnp.ndarray, grid: Sequence[int], patch: Sequence[int], channels: int
) -> jnp.ndarray:
    """Inverse of `patchify`: [B, prod(grid), prod(patch) * C] -> [B, *(grid * patch), C]."""
    batch = tokens.shape[0]
    ndim = len(grid)
    x = tokens.reshape(batch, *grid, *patch, channels)  # [B, g_1..g_n, p_1..p_n, C]
    order = [0, *(i for axis in range(ndim) for i in (1 + axis, 1 + ndim + axis)), 2 * ndim + 1]
    x = x.transpose(order)  # [B, g_1, p_1, ..., g_n, p_n, C]
    return x.reshape(batch, *(g * p for g, p in zip(grid, patch, strict=True)), channels)


def layer_norm(x: jnp.ndarray) -> jnp.ndarray:
    """LayerNorm without affine parameters (eps 1e-6), in fp32 with a two-pass variance."""
    x = x.astype(jnp.float32)
    mean = x.mean(axis=-1, keepdims=True)
    variance = jnp.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(variance + LAYER_NORM_EPSILON)


def modulate(x: jnp.ndarray, shift: jnp.ndarray, scale: jnp.ndarray) -> jnp.ndarray:
    """adaLN: x * (1 + scale) + shift, with per-example [B, 1, D] shift and scale."""
    return x * (1 + scale) + shift


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Conv with kernel = stride = patch: [B, *S, C] -> [B, N, hidden_size] tokens (row-major)."""

    hidden_size: int
    patch: tuple[int, ...]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        ndim = len(self.patch)
        fan_in = math.prod(self.patch) * x.shape[-1]
        h = nn.Conv(
            self.hidden_size,
            kernel_size=self.patch,
            strides=self.patch,
            padding="VALID",
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.with_logical_partitioning(
                patch_kernel_init(ndim), (None,) * (ndim + 1) + ("embed",)
            ),
            bias_init=patch_bias_init(fan_in),
            name="proj",
        )(x.astype(self.dtype))  # [B, *grid, D]
        return h.reshape(h.shape[0], -1, self.hidden_size)


class TimestepEmbedder(nn.Module):
    """Frequency features of t, then Linear-SiLU-Linear: [B] -> [B, hidden_size]."""

    hidden_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, t: jnp.ndarray) -> jnp.ndarray:
        h = timestep_embedding(t, FREQUENCY_EMBEDDING_SIZE)  # [B, 256]
        h = dense(self.hidden_size, (None, "embed"), self.dtype, "mlp_0", normal_002)(h)
        h = dense(self.hidden_size, ("embed", "mlp"), self.dtype, "mlp_2", normal_002)(nn.silu(h))
        return h.astype(jnp.float32)


class LabelEmbedder(nn.Module):
    """Class labels -> [B, hidden_size], with label dropout for classifier-free guidance.

    As in the official code the table has a null-class row (index `num_classes`) only when
    `dropout_prob > 0`. Labels are replaced by the null class where `force_drop_ids == 1` if
    given, else, when training, with probability `dropout_prob` (rng stream 'label_dropout',
    one draw per example of the global batch).
    """

    num_classes: int
    hidden_size: int
    dropout_prob: float

    @nn.compact
    def __call__(
        self, labels: jnp.ndarray, train: bool, force_drop_ids: jnp.ndarray | None = None
    ) -> jnp.ndarray:
        use_null_class = self.dropout_prob > 0
        table = self.param(
            "embedding_table",
            nn.with_logical_partitioning(normal_002, (None, "embed")),
            (self.num_classes + int(use_null_class), self.hidden_size),
            jnp.float32,
        )
        if force_drop_ids is not None:
            drop = jnp.asarray(force_drop_ids) == 1
        elif train and use_null_class:
            drop = jax.random.uniform(self.make_rng("label_dropout"), labels.shape) < (
                self.dropout_prob
            )
        else:
            drop = None
        if drop is not None:
            labels = jnp.where(drop, self.num_classes, labels)
        # An out-of-range label reads NaNs (jnp.take's default fill) rather than a clamped row.
        return jnp.take(table, labels, axis=0)


class Attention(nn.Module):
    """Multi-head self-attention as timm's (fused qkv Linear with bias, output projection).

    `mask` (optional, boolean, broadcastable to [B, H, N, N]): True where query q may attend to
    key k; every query needs at least one True key (e.g. a causal mask). None attends to all.
    """

    hidden_size: int
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None = None) -> jnp.ndarray:
        # x: [B, N, D] -> [B, N, D]
        batch, tokens, _ = x.shape
        head_dim = self.hidden_size // self.num_heads
        qkv = dense(3 * self.hidden_size, ("embed", "heads"), self.dtype, "qkv")(x)  # [B, N, 3D]
        # The 3D features are (q|k|v, head, head_dim), the order of timm's reshape.
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, head_dim)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, N, H, Dh]
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32) * (
            head_dim**-0.5
        )  # [B, H, N, N], fp32
        if mask is not None:
            logits = jnp.where(mask, logits, -jnp.inf)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(batch, tokens, -1)
        return dense(self.hidden_size, ("heads", "embed"), self.dtype, "proj")(out)


class Mlp(nn.Module):
    """Linear -> GELU (tanh approximation, as official) -> Linear."""

    hidden_size: int
    mlp_ratio: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # [B, N, D] -> [B, N, D]
        width = int(self.hidden_size * self.mlp_ratio)
        h = dense(width, ("embed", "mlp"), self.dtype, "fc1")(x)
        h = jax.nn.gelu(h, approximate=True)
        return dense(self.hidden_size, ("mlp", "embed"), self.dtype, "fc2")(h)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning on c: (x [B, N, D], c [B, D]) -> x.

    `mask` is the optional attention mask of `Attention` (e.g. causal for a token model).
    """

    hidden_size: int
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, c: jnp.ndarray, mask: jnp.ndarray | None = None
    ) -> jnp.ndarray:
        modulation = dense(
            6 * self.hidden_size, ("embed", "mlp"), self.dtype, "adaLN_modulation", zeros
        )(nn.silu(c))[:, None, :].astype(jnp.float32)  # [B, 1, 6D]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(
            modulation, 6, axis=-1
        )  # each [B, 1, D]
        attention = Attention(self.hidden_size, self.num_heads, self.dtype, name="attn")
        h = modulate(layer_norm(x), shift_msa, scale_msa).astype(self.dtype)
        x = x + gate_msa * attention(h, mask)
        mlp = Mlp(self.hidden_size, self.mlp_ratio, self.dtype, name="mlp")
        h = modulate(layer_norm(x), shift_mlp, scale_mlp).astype(self.dtype)
        return x + gate_mlp * mlp(h)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then Linear to the patch values: [B, N, D] -> [B, N, out]."""

    hidden_size: int
    out_features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
        modulation = dense(
            2 * self.hidden_size, ("embed", "mlp"), self.dtype, "adaLN_modulation", zeros
        )(nn.silu(c))[:, None, :].astype(jnp.float32)  # [B, 1, 2D]
        shift, scale = jnp.split(modulation, 2, axis=-1)
        h = modulate(layer_norm(x), shift, scale).astype(self.dtype)
        return dense(self.out_features, ("embed", None), self.dtype, "linear", zeros)(h)


class DiT(nn.Module):
    """Diffusion Transformer over a channels-last signal of any spatial rank.

    Call: `model.apply(variables, x, t, y, train=False, force_drop_ids=None, rngs=...)` with
      x: [B, *S, in_channels], S divisible by the patch size;
      t: [B] (or scalar) timesteps, integer or float;
      y: [B] int labels in [0, num_classes), or num_classes for the null class (which exists,
         as official, only when class_dropout_prob > 0); None if unconditional;
      train: enables label dropout (needs `rngs={'label_dropout': key}` if class_dropout_prob>0);
      force_drop_ids: optional [B], 1 where the label is replaced by the null class.
    Returns fp32 [B, *S, out_channels]; with `learn_sigma` the first `in_channels` channels are
    the prediction and the rest the variance interpolation (as official).

    Attributes:
      patch_size: int or per-axis tuple (e.g. (1, 2, 2) for video).
      in_channels: channels of the input.
      hidden_size, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP ratio.
      num_classes: label classes; 0 or None for an unconditional model (no label embedder).
      class_dropout_prob: probability of replacing a label by the null class when training.
      learn_sigma: output 2 * in_channels channels instead of in_channels.
      dtype: compute dtype of the matmuls (parameters stay fp32).
      remat: recompute each block's activations in the backward pass (less memory).
    """

    patch_size: PatchSize = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int | None = 1000
    class_dropout_prob: float = 0.1
    learn_sigma: bool = True
    dtype: Any = jnp.float32
    remat: bool = False

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    def _check_inputs(self, x: jnp.ndarray, y: jnp.ndarray | None) -> tuple[int, ...]:
        """Validate shapes and labels before any compute; returns the per-axis patch."""
        if x.ndim < 3:
            raise ValueError(f"DiT expects a channels-last batch [B, *S, C], got shape {x.shape}")
        if x.shape[-1] != self.in_channels:
            raise ValueError(
                f"DiT built for in_channels={self.in_channels} got input of shape {x.shape}"
            )
        patch = patch_shape(self.patch_size, x.ndim - 2)
        spatial = x.shape[1:-1]
        if any(s % p for s, p in zip(spatial, patch, strict=True)):
            raise ValueError(
                f"input spatial shape {tuple(spatial)} (input shape {x.shape}) is not divisible "
                f"by the patch size {patch}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.num_classes and y is None:
            raise ValueError(f"class-conditional DiT (num_classes={self.num_classes}) needs y")
        if not self.num_classes and y is not None:
            raise ValueError("unconditional DiT (num_classes=0/None) got labels y; pass y=None")
        return patch

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        t: jnp.ndarray,
        y: jnp.ndarray | None = None,
        train: bool = False,
        force_drop_ids: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        patch = self._check_inputs(x, y)
        batch = x.shape[0]
        grid = tuple(s // p for s, p in zip(x.shape[1:-1], patch, strict=True))

        h = PatchEmbed(self.hidden_size, patch, self.dtype, name="x_embedder")(x)  # [B, N, D]
        pos_embed = sincos_pos_embed(self.hidden_size, grid)  # [N, D], a constant, not a param
        h = h.astype(jnp.float32) + pos_embed[None]

        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
        c = TimestepEmbedder(self.hidden_size, self.dtype, name="t_embedder")(t)  # [B, D]
        if self.num_classes:
            c = c + LabelEmbedder(
                self.num_classes, self.hidden_size, self.class_dropout_prob, name="y_embedder"
            )(y, train, force_drop_ids)

        block = nn.remat(DiTBlock) if self.remat else DiTBlock
        for index in range(self.depth):
            h = materialize_cotangent(constrain_activation(h))
            h = block(
                self.hidden_size, self.num_heads, self.mlp_ratio, self.dtype, name=f"blocks_{index}"
            )(h, c)  # [B, N, D]

        out_features = math.prod(patch) * self.out_channels
        h = materialize_cotangent(h)
        h = FinalLayer(self.hidden_size, out_features, self.dtype, name="final_layer")(h, c)
        return unpatchify(h.astype(jnp.float32), grid, patch, self.out_channels)
