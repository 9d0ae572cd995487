"""N-d VQ-VAE: convolutional encoder -> quantizer -> convolutional decoder.

The same modules compress audio `[B, T, C]`, images `[B, H, W, C]` and video `[B, T, H, W, C]`:
convolutions take their rank from the input, and downsampling strides may differ per axis (e.g.
`(1, 2, 2)` keeps the frame rate of a video while halving its resolution).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mmgen_jax.models.layers import (
    ResBlock,
    check_divisible,
    constrain_activation,
    conv,
    group_norm,
    spatial_ndim,
)
from mmgen_jax.models.quantizers import QuantizerOutput

Stride = int | Sequence[int]


def _per_axis(value: Stride, ndim: int, what: str = "stride") -> tuple[int, ...]:
    """An int or per-axis `what` (stride, patch size, kernel size) as one int per axis."""
    if isinstance(value, int):
        return (value,) * ndim
    if len(value) != ndim:
        raise ValueError(f"{what} {tuple(value)} has {len(value)} axes, the input has {ndim}")
    return tuple(int(v) for v in value)


def total_downsampling(strides: Sequence[Stride], ndim: int) -> tuple[int, ...]:
    """Per-axis product of the level strides: how much smaller the latent grid is."""
    factor = np.ones(ndim, dtype=int)
    for stride in strides:
        factor *= np.asarray(_per_axis(stride, ndim))
    return tuple(int(f) for f in factor)


def space_to_depth(x: jnp.ndarray, patch: tuple[int, ...]) -> jnp.ndarray:
    """[B, *S, C] -> [B, *S/p, prod(p) * C]: non-overlapping patches become channels."""
    spatial = x.shape[1:-1]
    split = [x.shape[0]]
    for size, p in zip(spatial, patch, strict=True):
        split += [size // p, p]
    x = x.reshape(*split, x.shape[-1])  # [B, S1/p1, p1, S2/p2, p2, ..., C]
    ndim = len(spatial)
    order = [0, *(1 + 2 * i for i in range(ndim)), *(2 + 2 * i for i in range(ndim)), 1 + 2 * ndim]
    x = x.transpose(order)  # [B, S1/p1, S2/p2, ..., p1, p2, ..., C]
    return x.reshape(x.shape[0], *(s // p for s, p in zip(spatial, patch, strict=True)), -1)


def depth_to_space(x: jnp.ndarray, patch: tuple[int, ...]) -> jnp.ndarray:
    """Inverse of `space_to_depth`: [B, *S, prod(p) * C] -> [B, *S*p, C]."""
    spatial, ndim = x.shape[1:-1], len(patch)
    channels = x.shape[-1] // int(np.prod(patch))
    x = x.reshape(x.shape[0], *spatial, *patch, channels)
    order = [0]
    for i in range(ndim):
        order += [1 + i, 1 + ndim + i]
    x = x.transpose(*order, 1 + 2 * ndim)  # [B, S1, p1, S2, p2, ..., C]
    return x.reshape(x.shape[0], *(s * p for s, p in zip(spatial, patch, strict=True)), channels)


def _res_block(remat: bool):
    return nn.remat(ResBlock) if remat else ResBlock


class Encoder(nn.Module):
    """Conv stem, residual stages separated by strided convs, projection to `latent_dim`.

    Attributes:
      channels: width of each stage; stage i+1 follows a downsampling by `strides[i]`.
      strides: one stride per transition (len(channels) - 1 entries), an int or per-axis tuple.
      num_res_blocks: residual blocks per stage.
      latent_dim: channels of the output (the quantizer's input).
    """

    channels: Sequence[int]
    strides: Sequence[Stride]
    num_res_blocks: int
    latent_dim: int
    num_groups: int = 8
    dtype: Any = jnp.float32
    remat: bool = False  # recompute residual blocks in the backward pass (less memory)
    # Non-overlapping patches folded into channels before the stem (space-to-depth), so no
    # convolution runs at the input resolution (e.g. 8 audio samples per step of a waveform).
    patch_size: Stride = 1
    # The 3-wide convolutions' kernel, an int or per axis: `(1, 3, 3)` on video makes a
    # per-frame tokenizer (no mixing across time, 3x fewer FLOPs than `3`, see `layers.conv`).
    # A downsampling conv's kernel is at least its stride along every axis.
    kernel_size: Stride = 3

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # [B, *S, C] -> [B, *S/f, latent_dim]
        ndim = spatial_ndim(x)
        patch = _per_axis(self.patch_size, ndim, "patch_size")
        if patch != (1,) * ndim:
            x = space_to_depth(x, patch)  # [B, *S/p, prod(p) * C]
        kernel = _per_axis(self.kernel_size, ndim, "kernel_size")
        h = conv(self.channels[0], ndim, kernel, dtype=self.dtype, name="stem")(
            x.astype(self.dtype)
        )
        blocks = 0  # explicit names: the same parameter tree with and without remat
        for level, width in enumerate(self.channels):
            for _ in range(self.num_res_blocks):
                h = _res_block(self.remat)(
                    width, self.num_groups, self.dtype, kernel, name=f"ResBlock_{blocks}"
                )(h)
                blocks += 1
            if level < len(self.strides):
                stride = _per_axis(self.strides[level], ndim)
                h = conv(
                    self.channels[level + 1],
                    ndim,
                    tuple(max(k, s) for k, s in zip(kernel, stride, strict=True)),
                    stride,
                    dtype=self.dtype,
                    name=f"down_{level}",
                )(h)
            h = constrain_activation(h)
        h = group_norm(h.shape[-1], self.num_groups, self.dtype)(h)
        return conv(self.latent_dim, ndim, kernel=1, dtype=self.dtype, name="to_latent")(
            nn.swish(h)
        )


class Decoder(nn.Module):
    """Mirror of `Encoder`: latent projection, residual stages with nearest upsampling + conv."""

    channels: Sequence[int]  # the encoder's stage widths, in encoder order
    strides: Sequence[Stride]  # the encoder's strides, in encoder order
    num_res_blocks: int
    out_channels: int
    num_groups: int = 8
    dtype: Any = jnp.float32
    remat: bool = False  # recompute residual blocks in the backward pass (less memory)
    patch_size: Stride = 1  # the encoder's space-to-depth patch, undone at the output
    kernel_size: Stride = 3  # the encoder's kernel, an int or per axis

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:  # [B, *S/f, D] -> [B, *S, out_channels]
        ndim = spatial_ndim(z)
        kernel = _per_axis(self.kernel_size, ndim, "kernel_size")
        h = conv(self.channels[-1], ndim, kernel, dtype=self.dtype, name="from_latent")(
            z.astype(self.dtype)
        )
        blocks = 0  # explicit names: the same parameter tree with and without remat
        for level in reversed(range(len(self.channels))):
            for _ in range(self.num_res_blocks):
                h = _res_block(self.remat)(
                    self.channels[level],
                    self.num_groups,
                    self.dtype,
                    kernel,
                    name=f"ResBlock_{blocks}",
                )(h)
                blocks += 1
            if level > 0:
                stride = _per_axis(self.strides[level - 1], ndim)
                for axis, factor in enumerate(stride):
                    h = jnp.repeat(h, factor, axis=axis + 1)
                h = conv(
                    self.channels[level - 1], ndim, kernel, dtype=self.dtype, name=f"up_{level}"
                )(h)
                h = constrain_activation(h)
        h = group_norm(h.shape[-1], self.num_groups, self.dtype)(h)
        patch = _per_axis(self.patch_size, ndim, "patch_size")
        patch_volume = int(np.prod(patch))
        out = conv(
            self.out_channels * patch_volume, ndim, kernel, dtype=self.dtype, name="to_signal"
        )(nn.swish(h))
        if patch_volume > 1:
            out = depth_to_space(out, patch)  # [B, *S, out_channels]
        return out.astype(jnp.float32)


class VQVAE(nn.Module):
    """Encoder -> quantizer -> decoder, with index-level encode/decode as public API.

    Attributes:
      encoder, decoder: the N-d conv networks (`Encoder`, `Decoder`).
      quantizer: any quantizer from `mmgen_jax.models.quantizers` whose input width equals the
        encoder's `latent_dim`.
    """

    encoder: Encoder
    decoder: Decoder
    quantizer: nn.Module

    def check_input(self, x: jnp.ndarray) -> None:
        """Raise a clear error if the signal's spatial shape cannot be downsampled evenly."""
        ndim = spatial_ndim(x)
        factors = total_downsampling((self.encoder.patch_size, *self.encoder.strides), ndim)
        for size, factor in zip(x.shape[1:-1], factors, strict=True):
            check_divisible((size,), factor, f"VQVAE input of shape {x.shape}")

    def __call__(
        self, x: jnp.ndarray, *, train: bool = False
    ) -> tuple[jnp.ndarray, QuantizerOutput]:
        """Reconstruct `x` [B, *S, C]; returns (reconstruction, quantizer output)."""
        quantized = self.encode(x, train=train)
        return self.decode(quantized.z_q), quantized

    def encode(self, x: jnp.ndarray, *, train: bool = False) -> QuantizerOutput:
        """Signal [B, *S, C] -> quantizer output on the latent grid [B, *S/f, D]."""
        self.check_input(x)
        return self.quantizer(self.encoder(x), train=train)

    def encode_to_indices(self, x: jnp.ndarray) -> jnp.ndarray:
        """Signal [B, *S, C] -> integer codes [B, *S/f]."""
        return self.encode(x).indices

    def decode(self, z_q: jnp.ndarray) -> jnp.ndarray:
        """Quantized latents [B, *S/f, D] -> signal [B, *S, C]."""
        return self.decoder(z_q)

    def decode_indices(self, indices: jnp.ndarray) -> jnp.ndarray:
        """Integer codes [B, *S/f] -> signal [B, *S, C]."""
        return self.decoder(self.quantizer.indices_to_codes(indices))

    def encode_to_code_vectors(self, x: jnp.ndarray) -> jnp.ndarray:
        """Signal [B, *S, C] -> quantized vectors in the code space [B, *S/f, code_dim].

        This is the latent a generator models: the codebook entries themselves, before the
        quantizer's output projection (low-dimensional when `code_dim` is small).
        """
        return self.quantizer.code_vectors(self.encode(x).indices)

    def decode_code_vectors(self, vectors: jnp.ndarray, snap: bool = True) -> jnp.ndarray:
        """Code-space vectors [B, *S/f, code_dim] -> signal, after snapping to the nearest code
        (`snap=True`) or through the quantizer's output projection as they are (`snap=False`:
        a generator's samples that fall between codes are decoded without rounding)."""
        if snap:
            return self.decode_indices(self.quantizer.nearest_indices(vectors))
        return self.decoder(self.quantizer.project_codes(vectors))
