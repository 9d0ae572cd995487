"""KL autoencoder: the Stable Diffusion VAE (diffusers `AutoencoderKL`) in Flax linen.

The architecture is that of diffusers' `AutoencoderKL` with `DownEncoderBlock2D` /
`UpDecoderBlock2D` blocks, as released in `stabilityai/sd-vae-ft-ema` and `sd-vae-ft-mse` (the
decoder the DiT paper samples through): block widths (128, 256, 512, 512), 2 residual blocks per
encoder level (3 per decoder level), 32 GroupNorm groups with epsilon 1e-6, SiLU, single-head
self-attention between two residual blocks in the middle of encoder and decoder, downsampling by
zero-padding one element at the end of each spatial axis then a stride-2 3x3 convolution,
upsampling by nearest-neighbour repetition then a 3x3 convolution, and 1x1 `quant_conv` /
`post_quant_conv` around the latent. The encoder returns the mean and log-variance of a diagonal
Gaussian posterior (log-variance clipped to [-30, 20] as diffusers does).

Module and parameter names follow the diffusers state_dict (`encoder/down_blocks_0_resnets_1/
conv1` is `encoder.down_blocks.0.resnets.1.conv1`), so `mmgen_jax.tools.import_sd_vae` maps
keys by rule. As in `mmgen_jax.models.vqvae`, everything is channels-last and takes its spatial
rank from the input: the same modules run on `[B, T, C]`, `[B, H, W, C]` and `[B, T, H, W, C]`
(the released weights are 2-D). Convolutions and matmuls run in `dtype`; GroupNorm, the
attention softmax and the outputs are at least float32 (float64 when `dtype` is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmgen_jax.models.layers import check_divisible, conv, conv_kernel_init, spatial_ndim

# Latent scale of the SD VAE used by latent diffusion and DiT: diffusion runs on
# `posterior_mean * SD_VAE_SCALE` (unit-variance-ish latents); samples decode `z / SD_VAE_SCALE`.
SD_VAE_SCALE = 0.18215
GROUP_NORM_EPSILON = 1e-6  # diffusers' resnet_eps for every GroupNorm of the autoencoder
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # diffusers' DiagonalGaussianDistribution clamp

# The released SD VAE (diffusers config of stabilityai/sd-vae-ft-ema and sd-vae-ft-mse).
SD_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
)


def precise(dtype: Any) -> Any:
    """The dtype of normalisation, softmax and outputs: `dtype`, but at least float32."""
    return jnp.promote_types(dtype, jnp.float32)


def group_norm(num_groups: int, name: str, dtype: Any) -> nn.GroupNorm:
    """GroupNorm over contiguous channel groups (as torch), computed at least in float32.

    The two-pass variance (`use_fast_variance=False`) avoids the cancellation of E[x^2] - E[x]^2
    on the large activations of deep VAE stages, so results match PyTorch to fp32 round-off.
    """
    return nn.GroupNorm(
        num_groups=num_groups,
        epsilon=GROUP_NORM_EPSILON,
        use_fast_variance=False,
        dtype=precise(dtype),
        name=name,
    )


class ResnetBlock(nn.Module):
    """diffusers `ResnetBlock2D` without time embedding: GroupNorm -> SiLU -> conv, twice, plus
    the input (through a 1x1 `conv_shortcut` when the width changes)."""

    features: int
    num_groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, *S, C_in] -> [B, *S, features]
        ndim = spatial_ndim(x)
        h = nn.silu(group_norm(self.num_groups, "norm1", self.dtype)(x).astype(self.dtype))
        h = conv(self.features, ndim, dtype=self.dtype, name="conv1")(h)
        h = nn.silu(group_norm(self.num_groups, "norm2", self.dtype)(h).astype(self.dtype))
        h = conv(self.features, ndim, dtype=self.dtype, name="conv2")(h)
        if x.shape[-1] != self.features:
            x = conv(self.features, ndim, kernel=1, dtype=self.dtype, name="conv_shortcut")(x)
        return x.astype(self.dtype) + h


class Downsample(nn.Module):
    """Halve every spatial axis: zero-pad one element at the end of each axis, then a 3-wide
    stride-2 'VALID' convolution (diffusers `Downsample2D` with padding 0: `F.pad(x, (0, 1, 0,
    1))`). The padding is asymmetric, unlike 'SAME', which would pad the start for even sizes."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, *S, C] -> [B, *S/2, features]
        ndim = spatial_ndim(x)
        x = jnp.pad(x, [(0, 0)] + [(0, 1)] * ndim + [(0, 0)])
        return nn.Conv(
            self.features,
            kernel_size=(3,) * ndim,
            strides=(2,) * ndim,
            padding="VALID",
            dtype=self.dtype,
            kernel_init=conv_kernel_init(ndim),
            name="conv",
        )(x)


class Upsample(nn.Module):
    """Double every spatial axis by nearest-neighbour repetition, then a 3x3 convolution."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, *S, C] -> [B, *2S, features]
        ndim = spatial_ndim(x)
        for axis in range(1, ndim + 1):
            x = jnp.repeat(x, 2, axis=axis)
        return conv(self.features, ndim, dtype=self.dtype, name="conv")(x)


class MidAttention(nn.Module):
    """Single-head self-attention over all positions, with a residual connection (diffusers
    `Attention` as built by `UNetMidBlock2D` for the VAE: heads = 1, head width = channels)."""

    num_groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, *S, C] -> [B, *S, C]
        batch, channels = x.shape[0], x.shape[-1]
        h = group_norm(self.num_groups, "group_norm", self.dtype)(x).astype(self.dtype)
        h = h.reshape(batch, -1, channels)  # [B, N, C], N = prod(S)

        def dense(name):
            return nn.Dense(channels, dtype=self.dtype, name=name)

        q, k, v = dense("to_q")(h), dense("to_k")(h), dense("to_v")(h)
        logits = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=precise(self.dtype))
        weights = jax.nn.softmax(logits * channels**-0.5, axis=-1)  # [B, N, N]
        out = jnp.einsum("bqk,bkc->bqc", weights.astype(self.dtype), v)
        out = dense("to_out")(out).reshape(x.shape)
        return x.astype(self.dtype) + out


class MidBlock(nn.Module):
    """Residual block -> self-attention -> residual block, at the lowest resolution."""

    num_groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, *S, C] -> [B, *S, C]
        width = x.shape[-1]
        x = ResnetBlock(width, self.num_groups, self.dtype, name="resnets_0")(x)
        x = MidAttention(self.num_groups, self.dtype, name="attentions_0")(x)
        return ResnetBlock(width, self.num_groups, self.dtype, name="resnets_1")(x)


class Encoder(nn.Module):
    """Signal -> the posterior's moments before `quant_conv`: [B, *S, C] -> [B, *S/f, 2 * latent],
    f = 2 ** (len(block_out_channels) - 1)."""

    block_out_channels: Sequence[int]
    layers_per_block: int
    latent_channels: int
    norm_num_groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ndim = spatial_ndim(x)
        groups = self.norm_num_groups
        h = conv(self.block_out_channels[0], ndim, dtype=self.dtype, name="conv_in")(
            x.astype(self.dtype)
        )
        for level, width in enumerate(self.block_out_channels):
            block = f"down_blocks_{level}"
            for index in range(self.layers_per_block):
                h = ResnetBlock(width, groups, self.dtype, name=f"{block}_resnets_{index}")(h)
            if level < len(self.block_out_channels) - 1:  # every level but the last halves S
                h = Downsample(width, self.dtype, name=f"{block}_downsamplers_0")(h)
        h = MidBlock(groups, self.dtype, name="mid_block")(h)
        h = nn.silu(group_norm(groups, "conv_norm_out", self.dtype)(h).astype(self.dtype))
        return conv(2 * self.latent_channels, ndim, dtype=self.dtype, name="conv_out")(h)


class Decoder(nn.Module):
    """Latent (after `post_quant_conv`) -> signal: [B, *S/f, latent] -> [B, *S, out_channels].

    Level i of the decoder has the width of encoder level n-1-i and one more residual block than
    an encoder level (diffusers builds `UpDecoderBlock2D` with `layers_per_block + 1` layers).
    """

    block_out_channels: Sequence[int]
    layers_per_block: int
    out_channels: int
    norm_num_groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        ndim = spatial_ndim(z)
        groups = self.norm_num_groups
        widths = list(reversed(self.block_out_channels))
        h = conv(widths[0], ndim, dtype=self.dtype, name="conv_in")(z.astype(self.dtype))
        h = MidBlock(groups, self.dtype, name="mid_block")(h)
        for level, width in enumerate(widths):
            block = f"up_blocks_{level}"
            for index in range(self.layers_per_block + 1):
                h = ResnetBlock(width, groups, self.dtype, name=f"{block}_resnets_{index}")(h)
            if level < len(widths) - 1:  # every level but the last doubles S
                h = Upsample(width, self.dtype, name=f"{block}_upsamplers_0")(h)
        h = nn.silu(group_norm(groups, "conv_norm_out", self.dtype)(h).astype(self.dtype))
        out = conv(self.out_channels, ndim, dtype=self.dtype, name="conv_out")(h)
        return out.astype(precise(self.dtype))


class AutoencoderKL(nn.Module):
    """The SD VAE: `encode` to a diagonal Gaussian posterior, `decode` a latent to a signal.

    Attributes:
      in_channels, out_channels: signal channels (3 for RGB in [-1, 1]).
      block_out_channels: width of each resolution level; there are len - 1 halvings.
      layers_per_block: residual blocks per encoder level (the decoder has one more per level).
      latent_channels: channels of the latent (4 for the SD VAE).
      norm_num_groups: GroupNorm groups; must divide every width.
      dtype: compute dtype of convolutions and matmuls (parameters stay float32).
    """

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: Sequence[int] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    dtype: Any = jnp.float32

    def setup(self):
        bad = [width for width in self.block_out_channels if width % self.norm_num_groups]
        if bad:
            raise ValueError(
                f"norm_num_groups={self.norm_num_groups} does not divide the widths {bad} of "
                f"block_out_channels={tuple(self.block_out_channels)}"
            )
        self.encoder = Encoder(
            self.block_out_channels,
            self.layers_per_block,
            self.latent_channels,
            self.norm_num_groups,
            self.dtype,
        )
        self.decoder = Decoder(
            self.block_out_channels,
            self.layers_per_block,
            self.out_channels,
            self.norm_num_groups,
            self.dtype,
        )
        # 1x1 convolutions in diffusers; a Dense over channels is the same map at any rank.
        self.quant_conv = nn.Dense(2 * self.latent_channels, dtype=self.dtype)
        self.post_quant_conv = nn.Dense(self.latent_channels, dtype=self.dtype)

    @property
    def downsampling_factor(self) -> int:
        """How many times smaller each spatial axis of the latent is than the signal's."""
        return 2 ** (len(self.block_out_channels) - 1)

    def _check(self, x: jax.Array, channels: int, what: str) -> None:
        if x.ndim < 3 or x.shape[-1] != channels:
            raise ValueError(
                f"AutoencoderKL.{what} expects a channels-last batch [B, *spatial, {channels}], "
                f"got shape {x.shape}"
            )

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Signal [B, *S, in_channels] -> posterior (mean, logvar), each [B, *S/f, latent]."""
        self._check(x, self.in_channels, "encode")
        check_divisible(x.shape[1:-1], self.downsampling_factor, f"AutoencoderKL input {x.shape}")
        moments = self.quant_conv(self.encoder(x)).astype(precise(self.dtype))
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: jax.Array) -> jax.Array:
        """Latent [B, *S/f, latent] -> signal [B, *S, out_channels] (not clipped)."""
        self._check(z, self.latent_channels, "decode")
        return self.decoder(self.post_quant_conv(z.astype(self.dtype)))

    def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> tuple[jax.Array, ...]:
        """Reconstruct x through the posterior mean, or a posterior sample when `rng` is given.

        Returns (reconstruction [B, *S, out_channels], mean, logvar).
        """
        mean, logvar = self.encode(x)
        z = mean
        if rng is not None:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
        return self.decode(z), mean, logvar


def decode_in_chunks(model: AutoencoderKL, variables: Any, z: jax.Array, chunk: int) -> jax.Array:
    """`model.decode` of latents [B, *S/f, latent] at most `chunk` at a time (jit-able).

    The decoder's full-resolution activations dominate memory (at 256 x 256, XLA plans about
    0.85 GB per image in float32 on a GPU), so a large sampling batch is decoded in a
    `lax.map` over chunks. Chunk j takes latents j, j + n, j + 2n, ... (n = B / chunk): every
    chunk draws evenly from each device's contiguous slice of a batch-sharded array, so all
    devices stay busy. A batch that `chunk` does not divide is decoded whole.
    """
    batch = z.shape[0]
    if batch <= chunk or batch % chunk:
        return model.apply(variables, z, method=AutoencoderKL.decode)
    steps = batch // chunk
    strided = z.reshape(chunk, steps, *z.shape[1:]).swapaxes(0, 1)  # [steps, chunk, ...]
    decoded = jax.lax.map(
        lambda latents: model.apply(variables, latents, method=AutoencoderKL.decode), strided
    )  # [steps, chunk, *S, C]
    return decoded.swapaxes(0, 1).reshape(batch, *decoded.shape[2:])
