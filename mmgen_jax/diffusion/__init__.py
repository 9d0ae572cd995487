"""Diffusion processes for the generators: Gaussian diffusion (DDPM / DDIM) over continuous arrays.

`gaussian.py` holds the process (schedules, forward noising, posterior, losses, respacing);
`samplers.py` the jit-friendly reverse loops with classifier-free guidance.
"""

from mmgen_jax.diffusion.gaussian import (
    GaussianDiffusion,
    MeanVariance,
    approx_standard_normal_cdf,
    betas_for_alpha_bar,
    betas_for_schedule,
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
    space_timesteps,
)
from mmgen_jax.diffusion.samplers import ddim_sample, ddpm_sample, guided_model_output

__all__ = [
    "GaussianDiffusion",
    "MeanVariance",
    "approx_standard_normal_cdf",
    "betas_for_alpha_bar",
    "betas_for_schedule",
    "ddim_sample",
    "ddpm_sample",
    "discretized_gaussian_log_likelihood",
    "guided_model_output",
    "mean_flat",
    "normal_kl",
    "space_timesteps",
]
