"""Full-reference image quality metrics (MSE, PSNR, SSIM) in pure ``jax.numpy``.

Everything here is batched, channels-last and jit-able, so reconstruction quality can be measured
inside the jitted eval step on device, without copying images back to the host. Each function
returns one value per example (shape ``[B]``); average over the batch (or a masked subset of it)
in the caller.

SSIM follows Wang et al. 2004 exactly as ``skimage.metrics.structural_similarity`` computes it with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``: an 11-tap Gaussian window,
population (co)variances, and the mean of the SSIM map over the positions where the window lies
inside the image, then over channels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["mse", "psnr", "ssim"]

# Floor on the MSE inside PSNR: identical images would otherwise give log10(0) = -inf and an
# infinite PSNR that poisons any average. 1e-10 caps PSNR at 100 dB for data_range=1.
_MIN_MSE = 1e-10


def mse(x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example mean squared error over all non-batch axes.

    Args:
      x, y: arrays of the same shape ``[B, ...]`` (any rank >= 1).

    Returns:
      ``[B]`` float32 mean squared error.
    """
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    reduce_axes = tuple(range(1, x.ndim))
    return jnp.mean(jnp.square(x - y), axis=reduce_axes)  # [B]


def psnr(x: jax.Array, y: jax.Array, *, data_range: float = 1.0) -> jax.Array:
    """Per-example peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)``.

    Works for any rank ``[B, ...]`` (images, audio, video), the MSE is taken over all non-batch
    axes. Identical inputs are capped (MSE floored at 1e-10, i.e. 100 dB for ``data_range=1``)
    instead of returning ``inf``.

    Args:
      x, y: arrays of the same shape ``[B, ...]``.
      data_range: the span of valid values (1.0 for [0, 1] images, 2.0 for [-1, 1], 255 for uint8).

    Returns:
      ``[B]`` float32 PSNR in dB.
    """
    per_example_mse = jnp.maximum(mse(x, y), _MIN_MSE)  # [B]
    return 10.0 * jnp.log10(data_range**2 / per_example_mse)


def _gaussian_kernel(filter_size: int, sigma: float) -> jax.Array:
    """Normalised 1-D Gaussian with ``filter_size`` taps (as scipy.ndimage builds it)."""
    radius = (filter_size - 1) // 2
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    weights = jnp.exp(-0.5 * jnp.square(offsets / sigma))
    return weights / jnp.sum(weights)  # [filter_size]


def _filter_axis(x: jax.Array, kernel: jax.Array, axis: int) -> jax.Array:
    """'Valid' 1-D correlation of ``x`` with ``kernel`` along ``axis``.

    A weighted sum of shifted slices rather than ``lax.conv``: exact float32 on every backend (TPU
    convolutions default to reduced precision) and XLA fuses it into one kernel.
    """
    taps = kernel.shape[0]
    out_len = x.shape[axis] - taps + 1
    out = 0.0
    for tap in range(taps):
        out = out + kernel[tap] * jax.lax.slice_in_dim(x, tap, tap + out_len, axis=axis)
    return out


def _ssim_window_size(height: int, width: int, filter_size: int) -> int:
    """The window actually used: ``filter_size``, or the largest odd size that fits the image."""
    window_size = min(filter_size, height, width)
    if window_size % 2 == 0:
        window_size -= 1
    return window_size


def ssim(
    x: jax.Array,
    y: jax.Array,
    *,
    data_range: float = 1.0,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jax.Array:
    """Per-example structural similarity (Gaussian-window SSIM, Wang et al. 2004).

    Matches ``skimage.metrics.structural_similarity(x, y, data_range=data_range,
    gaussian_weights=True, sigma=filter_sigma, use_sample_covariance=False, win_size=w,
    channel_axis=-1)`` where ``w`` is the window size described below.

    Small images: when an image side is smaller than ``filter_size`` (the embedded digits are 8x8),
    the window shrinks to the largest odd size ``w <= min(H, W)``. As in skimage, the Gaussian
    weights themselves stay ``filter_size`` taps wide and the image is extended by symmetric
    reflection (scipy's ``mode='reflect'``); only the border that is cropped before averaging
    shrinks to ``(w - 1) // 2`` pixels. For 8x8 images this averages the central 2x2 positions
    (``w = 7``). When the image is at least ``filter_size`` on both sides no reflection is needed
    and this is plain 'valid' filtering.

    Args:
      x, y: images ``[B, H, W, C]`` (or ``[H, W, C]``, treated as a batch of one), channels-last.
      data_range: the span of valid pixel values (1.0 for [0, 1], 2.0 for [-1, 1]).
      filter_size: taps of the Gaussian window (odd).
      filter_sigma: standard deviation of the Gaussian window in pixels.
      k1, k2: the stabilising constants of the SSIM formula.

    Returns:
      ``[B]`` float32 mean SSIM (over valid positions and channels).
    """
    if filter_size % 2 != 1:
        raise ValueError(f"filter_size must be odd, got {filter_size}")
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {y.shape}")
    if x.ndim == 3:
        x, y = x[None], y[None]
    if x.ndim != 4:
        raise ValueError(f"expected [B, H, W, C] images, got shape {x.shape}")
    height, width = x.shape[1], x.shape[2]

    window_size = _ssim_window_size(height, width, filter_size)
    kernel = _gaussian_kernel(filter_size, filter_sigma)  # [filter_size]
    filter_radius = (filter_size - 1) // 2
    crop = (window_size - 1) // 2
    # Filtering a reflect-padded image and then cropping `crop` pixels equals padding by only
    # `filter_radius - crop` and filtering 'valid': we compute just the positions that are kept.
    reflect = filter_radius - crop

    def gaussian_blur(image: jax.Array) -> jax.Array:
        # [B, H, W, C] -> [B, H - 2 * crop, W - 2 * crop, C]
        if reflect > 0:
            # numpy's 'symmetric' (edge pixel repeated) is scipy.ndimage's 'reflect'.
            pad_width = ((0, 0), (reflect, reflect), (reflect, reflect), (0, 0))
            image = jnp.pad(image, pad_width, mode="symmetric")
        return _filter_axis(_filter_axis(image, kernel, axis=1), kernel, axis=2)

    mean_x = gaussian_blur(x)
    mean_y = gaussian_blur(y)
    # Population (co)variances, as in Wang et al. (use_sample_covariance=False).
    var_x = gaussian_blur(x * x) - mean_x * mean_x
    var_y = gaussian_blur(y * y) - mean_y * mean_y
    cov_xy = gaussian_blur(x * y) - mean_x * mean_y

    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    numerator = (2.0 * mean_x * mean_y + c1) * (2.0 * cov_xy + c2)
    denominator = (mean_x * mean_x + mean_y * mean_y + c1) * (var_x + var_y + c2)
    ssim_map = numerator / denominator  # [B, H', W', C]
    # Every channel has the same number of valid positions, so the mean over (H', W', C) equals
    # skimage's mean of per-channel means.
    return jnp.mean(ssim_map, axis=(1, 2, 3))  # [B]
