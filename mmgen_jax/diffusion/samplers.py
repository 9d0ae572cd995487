"""Reverse-process samplers (DDPM, DDIM) with classifier-free guidance, as single `lax.scan` loops.

Both samplers run every step inside one `lax.scan`, so under `jax.jit` the whole loop is one XLA
program (call them inside `jit` with the model parameters as an argument, e.g.
`jax.jit(lambda params, rng: ddim_sample(partial(apply, params), diffusion, shape, rng))`).

Randomness: the starting noise x_T and the noise of step i are drawn at the *global* batch shape
from keys derived from `rng` (`split`, then `fold_in(step_key, i)`), so a seed fixes the samples
whatever the device count or batch sharding (JAX's partitionable threefry draws the same values
however the output is sharded).

Classifier-free guidance (Ho & Salimans 2022): with `cfg_scale != 1` and labels `y`, the model
sees the batch twice, with `y` and with `null_label`, and
`guided = uncond + cfg_scale * (cond - uncond)` replaces the mean prediction. Because x_0 and eps
are affine in the mean output for a fixed x_t, guiding the raw output is guiding eps for every
`model_mean_type`. By default all C data channels are guided; `cfg_channels=3` reproduces the
official DiT `forward_with_cfg`, which guides only the first 3 channels (the remaining
eps channels, e.g. the 4th SD-VAE latent channel, stay conditional). With `learn_sigma`, the
variance half is always taken from the conditional output. Record `cfg_scale` and
`cfg_channels` next to the samples: both change what the samples look like.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mmgen_jax.diffusion.gaussian import GaussianDiffusion, ModelFn


def guided_model_output(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    x_t: jax.Array,
    t: jax.Array,
    y: Any = None,
    cfg_scale: float = 1.0,
    null_label: Any = None,
    cfg_channels: int | None = None,
) -> jax.Array:
    """The (guided) float32 model output [B, *S, C or 2C] at step indices t [B].

    The model is called with the original-process timesteps `diffusion.model_timesteps(t)`.
    `cfg_scale` must be a Python number (it decides the batch doubling at trace time);
    `null_label` is the "no condition" value, broadcast to `y`'s shape.
    """
    timesteps = diffusion.model_timesteps(t)  # [B]
    if cfg_scale == 1.0:
        return model_fn(x_t, timesteps, y).astype(jnp.float32)
    if y is None or null_label is None:
        raise ValueError("classifier-free guidance (cfg_scale != 1) needs y and null_label")
    channels = x_t.shape[-1]
    guided_channels = channels if cfg_channels is None else cfg_channels
    if not 1 <= guided_channels <= channels:
        raise ValueError(f"cfg_channels={cfg_channels} must be in [1, {channels}]")
    batch = x_t.shape[0]
    y = jnp.asarray(y)
    null = jnp.broadcast_to(jnp.asarray(null_label, dtype=y.dtype), y.shape)
    output = model_fn(
        jnp.concatenate([x_t, x_t]),  # [2B, *S, C]
        jnp.concatenate([timesteps, timesteps]),  # [2B]
        jnp.concatenate([y, null]),  # [2B, ...]
    ).astype(jnp.float32)
    cond, uncond = output[:batch], output[batch:]
    guided = uncond[..., :guided_channels] + cfg_scale * (
        cond[..., :guided_channels] - uncond[..., :guided_channels]
    )
    # The unguided mean channels and the variance half (learn_sigma) come from the cond output.
    return jnp.concatenate([guided, cond[..., guided_channels:]], axis=-1)


def _reverse_loop(
    step_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    num_steps: int,
    shape: tuple[int, ...],
    rng: jax.Array,
) -> jax.Array:
    """Run x_{i-1} = step_fn(x_i, t=[i]*B, noise_i) for i = T-1, ..., 0 from x_T ~ N(0, I)."""
    init_rng, step_rng = jax.random.split(rng)
    x_init = jax.random.normal(init_rng, shape, jnp.float32)  # [B, *S, C]

    def body(x: jax.Array, index: jax.Array) -> tuple[jax.Array, None]:
        t = jnp.full((shape[0],), index, dtype=jnp.int32)  # [B]
        noise = jax.random.normal(jax.random.fold_in(step_rng, index), shape, jnp.float32)
        return step_fn(x, t, noise), None

    indices = jnp.arange(num_steps - 1, -1, -1, dtype=jnp.int32)  # T-1, ..., 0
    samples, _ = jax.lax.scan(body, x_init, indices)
    return samples


def ddpm_sample(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    shape: tuple[int, ...],
    rng: jax.Array,
    y: Any = None,
    cfg_scale: float = 1.0,
    null_label: Any = None,
    clip_denoised: bool = False,
    cfg_channels: int | None = None,
) -> jax.Array:
    """Ancestral sampling (Ho et al. 2020, Alg. 2) over every step of `diffusion`.

    `shape` is the global sample shape [B, *S, C] with C data channels; `y` [B, ...] are the
    labels (or None). Returns x_0 samples [B, *S, C] in float32. Pass a respaced diffusion to
    take fewer steps (with the learned or respaced fixed variances).
    """

    def step(x: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
        output = guided_model_output(
            model_fn, diffusion, x, t, y, cfg_scale, null_label, cfg_channels
        )
        return diffusion.ddpm_step(output, x, t, noise, clip_denoised)

    return _reverse_loop(step, diffusion.num_timesteps, tuple(shape), rng)


def ddim_sample(
    model_fn: ModelFn,
    diffusion: GaussianDiffusion,
    shape: tuple[int, ...],
    rng: jax.Array,
    y: Any = None,
    cfg_scale: float = 1.0,
    null_label: Any = None,
    clip_denoised: bool = False,
    cfg_channels: int | None = None,
    eta: float = 0.0,
) -> jax.Array:
    """DDIM sampling (Song et al. 2021, eq. 12) over every step of `diffusion`.

    Usually `diffusion` is respaced, e.g. `.respace(space_timesteps(1000, 'ddim50'))`.
    `eta = 0` is the deterministic sampler (the starting noise is still drawn from `rng`).
    Arguments and result as `ddpm_sample`.
    """

    def step(x: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
        output = guided_model_output(
            model_fn, diffusion, x, t, y, cfg_scale, null_label, cfg_channels
        )
        return diffusion.ddim_step(output, x, t, noise, eta, clip_denoised)

    return _reverse_loop(step, diffusion.num_timesteps, tuple(shape), rng)
