"""Shared N-d building blocks.

Every block here works on channels-last arrays of any spatial rank: audio `[B, T, C]`, images
`[B, H, W, C]` and video `[B, T, H, W, C]` all pass through the same code; the number of spatial
dimensions is read from the input (`x.ndim - 2`), never assumed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def spatial_ndim(x: jnp.ndarray) -> int:
    """Number of spatial axes of a channels-last batch `[B, *spatial, C]`."""
    if x.ndim < 3:
        raise ValueError(f"expected a channels-last batch [B, *spatial, C], got shape {x.shape}")
    return x.ndim - 2


def conv_kernel_init(ndim: int) -> nn.initializers.Initializer:
    """Flax's default conv kernel init (LeCun normal) with logical axis names
    `(None, ..., 'conv_in', 'conv_out')` for the sharding rules."""
    return nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), (None,) * ndim + ("conv_in", "conv_out")
    )


def conv(
    features: int,
    ndim: int,
    kernel: int | Sequence[int] = 3,
    stride: int | Sequence[int] = 1,
    name: str | None = None,
    **kwargs,
) -> nn.Conv:
    """An N-d 'SAME' convolution; `kernel` and `stride` are an int (every axis) or per axis.

    Given per axis, leading axes with kernel 1 and stride 1 (e.g. `(1, 3, 3)` on video: a
    per-frame conv) are left out of the kernel, so Flax folds them into the batch and runs a
    lower-rank convolution: the same function, and on XLA:CPU a 2-D convolution does 1.6-3x
    more FLOP/s than the 3-D one with the same kernel (experiments/bench_conv.py). An int
    kernel always makes a full-rank kernel (so 1x1 convs keep their parameter shape).
    """
    per_axis = not isinstance(kernel, int)
    kernel = tuple(int(k) for k in kernel) if per_axis else (kernel,) * ndim
    stride = (stride,) * ndim if isinstance(stride, int) else tuple(int(s) for s in stride)
    if len(kernel) != ndim or len(stride) != ndim:
        raise ValueError(f"kernel {kernel} and stride {stride} need {ndim} axes each")
    lead = 0
    while per_axis and lead < ndim - 1 and kernel[lead] == 1 and stride[lead] == 1:
        lead += 1
    return nn.Conv(
        features,
        kernel_size=kernel[lead:],
        strides=stride[lead:],
        padding="SAME",
        kernel_init=conv_kernel_init(ndim - lead),
        name=name,
        **kwargs,
    )


def constrain_activation(x: jnp.ndarray) -> jnp.ndarray:
    """Shard a channels-last activation [B, ..., C] by the logical names
    ('activation_batch', None..., 'activation_embed') under the rules in context (a no-op
    outside `nn.logical_axis_rules` / a mesh)."""
    names = ("activation_batch",) + (None,) * (x.ndim - 2) + ("activation_embed",)
    return nn.with_logical_constraint(x, names)


@jax.custom_vjp
def materialize_cotangent(x: jnp.ndarray) -> jnp.ndarray:
    """Identity whose backward pass stores its incoming gradient in a buffer of its own.

    Between residual blocks the gradient of the residual stream is a chain of elementwise adds.
    Without a barrier XLA fuses that whole chain into every consumer below it, so the backward
    pass of block i recomputes the gradient of every block above it: elementwise work grows with
    depth squared (on XLA:CPU a depth-4 DiT spent a third of its backward pass there). An
    optimization barrier on the cotangent makes each block's input gradient a real buffer. On CPU
    this needs `mmgen_jax.xla_flags.configure_for_cpu()`, which keeps XLA:CPU from deleting
    barriers.
    """
    return x


def _materialize_fwd(x):
    return x, None


def _materialize_bwd(_, g):
    return (jax.lax.optimization_barrier(g),)


materialize_cotangent.defvjp(_materialize_fwd, _materialize_bwd)


class ResBlock(nn.Module):
    """Pre-activation residual block: GroupNorm -> swish -> conv, twice, plus a (projected) skip.

    The skip path is a 1x1 projection only when the channel count changes, applied to the block's
    *input* (a classic bug elsewhere applies it to the intermediate activation).
    """

    features: int
    num_groups: int = 8
    dtype: jnp.dtype = jnp.float32
    kernel_size: int | Sequence[int] = 3  # an int (every axis) or per axis, as `conv`

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # [B, *S, C_in] -> [B, *S, features]
        ndim = spatial_ndim(x)
        h = group_norm(x.shape[-1], self.num_groups, self.dtype)(x)
        h = conv(self.features, ndim, self.kernel_size, dtype=self.dtype)(nn.swish(h))
        h = group_norm(self.features, self.num_groups, self.dtype)(h)
        h = conv(self.features, ndim, self.kernel_size, dtype=self.dtype)(nn.swish(h))
        if x.shape[-1] != self.features:
            x = conv(self.features, ndim, kernel=1, dtype=self.dtype, name="skip")(x)
        return x + h


def group_norm(channels: int, num_groups: int, dtype: Any) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= `num_groups` that divides `channels`."""
    return nn.GroupNorm(num_groups=math.gcd(num_groups, channels), dtype=dtype)


def check_divisible(shape: Sequence[int], factor: int, what: str) -> None:
    """Raise a clear error if any spatial size is not divisible by `factor`."""
    bad = [s for s in shape if s % factor]
    if bad:
        raise ValueError(
            f"{what}: spatial shape {tuple(shape)} is not divisible by the total "
            f"downsampling factor {factor} (offending sizes: {bad})"
        )
