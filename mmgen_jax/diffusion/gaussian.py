"""Gaussian diffusion (DDPM) for continuous signals: schedules, the forward process, losses.

The forward process q(x_t | x_0) = N(sqrt(a_t) x_0, (1 - a_t) I) with
a_t = prod_{s<=t} (1 - beta_s) (Ho et al. 2020, eq. 4), its posterior q(x_{t-1} | x_t, x_0)
(eq. 6-7), the model's reverse step p(x_{t-1} | x_t) and the training losses follow the official
`improved-diffusion` (Nichol & Dhariwal 2021) and `DiT` (Peebles & Xie 2023)
`gaussian_diffusion.py` / `respace.py` / `diffusion_utils.py`, re-expressed in pure JAX and
extended with v-prediction (Salimans & Ho 2022). Samplers that run the reverse process live in
`samplers.py`.

Conventions:
* Arrays are channels-last of any rank: `x` is `[B, *S, C]` (images, audio, video, latents).
* `t` is an int array `[B]` of step *indices* into this (possibly respaced) diffusion, 0 = the
  first noising step, as in the official code. The model is always called with
  `timestep_map[t]`, the timestep of the original process, so a model trained on 1000 steps can
  be sampled with a respaced 50-step diffusion.
* The model is a function `model_fn(x_t, timesteps, y) -> output` (`y` may be None). Its output
  has C channels, or 2C when `learn_sigma`: the second half is the variance interpolation value
  v in [-1, 1] ("learned_range", Nichol & Dhariwal eq. 15).
* Every schedule constant is computed once in float64 numpy (as the official code does) and
  cast to float32 where it is used; all traced arithmetic is float32, whatever the model's
  compute dtype (DESIGN.md: the sampler's arithmetic and the losses stay fp32).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]

MODEL_MEAN_TYPES = ("epsilon", "v", "x0")
FIXED_VARIANCES = ("fixed_small", "fixed_large")


# ----------------------------------------------------------------------------------------------
# Beta schedules
# ----------------------------------------------------------------------------------------------


def betas_for_alpha_bar(
    num_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999
) -> np.ndarray:
    """Betas [T] (float64) that discretise a continuous a(s), s in [0, 1].

    beta_i = min(1 - a((i + 1) / T) / a(i / T), max_beta); the cap avoids the singularity at
    s = 1 where a(s) -> 0 (Nichol & Dhariwal 2021, eq. 17 and the text below it).
    """
    betas = [
        min(1.0 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
        for i in range(num_timesteps)
    ]
    return np.asarray(betas, dtype=np.float64)


def _cosine_alpha_bar(s: float, offset: float = 0.008) -> float:
    """f(s) = cos^2(((s + offset) / (1 + offset)) * pi / 2) (Nichol & Dhariwal 2021, eq. 17)."""
    return math.cos((s + offset) / (1.0 + offset) * math.pi / 2.0) ** 2


def betas_for_schedule(name: str, num_timesteps: int = 1000) -> np.ndarray:
    """Betas [T] (float64) of a named schedule, as official `get_named_beta_schedule`.

    * 'linear': Ho et al. 2020, beta from 1e-4 to 2e-2 for T = 1000; both ends are scaled by
      1000 / T so that the schedule keeps its shape for any T.
    * 'cosine': Nichol & Dhariwal 2021 (s = 0.008, beta capped at 0.999).
    """
    if name == "linear":
        scale = 1000.0 / num_timesteps
        return np.linspace(scale * 1e-4, scale * 2e-2, num_timesteps, dtype=np.float64)
    if name == "cosine":
        return betas_for_alpha_bar(num_timesteps, _cosine_alpha_bar, max_beta=0.999)
    raise ValueError(f"unknown beta schedule {name!r}; expected 'linear' or 'cosine'")


# ----------------------------------------------------------------------------------------------
# Respacing (official respace.py)
# ----------------------------------------------------------------------------------------------


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> set[int]:
    """Timesteps of the original process to keep when sampling with fewer steps.

    `section_counts` splits the T steps into equal sections and takes that many evenly strided
    steps from each: e.g. T = 300 with [10, 15, 20] keeps 10 steps of the first 100, 15 of the
    next 100 and 20 of the last 100. A comma-separated string is accepted too. 'ddimN' uses the
    DDIM paper's fixed integer stride (the smallest stride giving exactly N steps, starting at 0).
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired_count = int(section_counts[len("ddim") :])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired_count:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(
                f"cannot create exactly {desired_count} steps from {num_timesteps} with an "
                "integer stride"
            )
        section_counts = [int(count) for count in section_counts.split(",")]
    size_per_section, extra = divmod(num_timesteps, len(section_counts))
    start = 0
    kept: list[int] = []
    for section, count in enumerate(section_counts):
        size = size_per_section + (1 if section < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            # Python's round (half to even), exactly as the official code.
            kept.append(start + round(position))
            position += stride
        start += size
    return set(kept)


# ----------------------------------------------------------------------------------------------
# Gaussian log-likelihood utilities (official diffusion_utils.py / losses.py)
# ----------------------------------------------------------------------------------------------


def mean_flat(x: jax.Array) -> jax.Array:
    """Mean over every non-batch axis: [B, ...] -> [B]."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def normal_kl(mean1: Any, logvar1: Any, mean2: Any, logvar2: Any) -> jax.Array:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats (broadcasts)."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + jnp.exp(logvar1 - logvar2)
        + jnp.square(mean1 - mean2) * jnp.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: jax.Array) -> jax.Array:
    """The tanh approximation of the standard normal CDF used by the official code."""
    return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(
    x: jax.Array, *, means: jax.Array, log_scales: jax.Array
) -> jax.Array:
    """Log-probability (nats, elementwise) of data on 256 bins in [-1, 1] under a Gaussian.

    Each value owns the bin [x - 1/255, x + 1/255]; the two extreme bins extend to -inf / +inf
    (Ho et al. 2020, eq. 13). Assumes `x` was uint8 rescaled to [-1, 1]; on continuous latents
    it is the same surrogate decoder term the official DiT training uses.
    """
    centered = x - means
    inv_stdv = jnp.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
    log_cdf_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
    return jnp.where(
        x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta)
    )


# ----------------------------------------------------------------------------------------------
# The diffusion process
# ----------------------------------------------------------------------------------------------


def _extract(values: Any, t: jax.Array, ndim: int) -> jax.Array:
    """values[t] as float32, shaped [B, 1, ..., 1] to broadcast against a rank-`ndim` array."""
    picked = jnp.asarray(values, dtype=jnp.float32)[t]  # [B]
    return picked.reshape(picked.shape + (1,) * (ndim - 1))


class MeanVariance(NamedTuple):
    """A Gaussian over x_{t-1} together with the x_0 estimate it was built from (all [B, *S, C])."""

    mean: jax.Array
    log_variance: jax.Array
    pred_x0: jax.Array


@struct.dataclass
class GaussianDiffusion:
    """A discretised Gaussian diffusion process and what a model needs from it.

    Build it with `GaussianDiffusion.from_betas(...)`, and a faster sampling process with
    `.respace(space_timesteps(T, 'ddim50'))`. It is a pytree: the schedule arrays (float64 numpy,
    [T] each) are leaves, the options are static, so it can be closed over or passed to `jit`.

    Options:
    * `model_mean_type`: what the first C output channels predict: 'epsilon' (the noise, Ho et
      al. 2020), 'v' (sqrt(a) eps - sqrt(1 - a) x_0, Salimans & Ho 2022) or 'x0'.
    * `learn_sigma`: the model outputs 2C channels, the second half interpolating the log
      variance between the posterior variance and beta ("learned_range"); trained by the 'vb'
      loss term.
    * `fixed_variance`: the variance when not learned: 'fixed_small' = the posterior variance
      beta~_t, 'fixed_large' = beta_t (with beta~_1 at t = 0 as official, for a better decoder
      likelihood).
    """

    betas: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    sqrt_alphas_cumprod: np.ndarray
    sqrt_one_minus_alphas_cumprod: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray
    sqrt_recipm1_alphas_cumprod: np.ndarray
    posterior_variance: np.ndarray
    # log beta~_t with the t = 0 entry (where beta~_0 = 0) replaced by log beta~_1, as official.
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray
    log_betas: np.ndarray
    fixed_log_variance: np.ndarray
    # Original-process timestep of each step; the identity unless respaced.
    timestep_map: np.ndarray
    model_mean_type: str = struct.field(pytree_node=False, default="epsilon")
    learn_sigma: bool = struct.field(pytree_node=False, default=False)
    fixed_variance: str = struct.field(pytree_node=False, default="fixed_small")

    @classmethod
    def from_betas(
        cls,
        betas: Sequence[float] | np.ndarray,
        *,
        model_mean_type: str = "epsilon",
        learn_sigma: bool = False,
        fixed_variance: str = "fixed_small",
        timestep_map: Sequence[int] | np.ndarray | None = None,
    ) -> GaussianDiffusion:
        """All schedule constants, computed in float64 from betas [T] (official __init__)."""
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.shape[0] < 2:
            raise ValueError(f"betas must be 1-D with at least 2 steps, got shape {betas.shape}")
        if not np.all((betas > 0) & (betas <= 1)):
            raise ValueError("betas must lie in (0, 1]")
        if model_mean_type not in MODEL_MEAN_TYPES:
            raise ValueError(f"model_mean_type {model_mean_type!r} not in {MODEL_MEAN_TYPES}")
        if fixed_variance not in FIXED_VARIANCES:
            raise ValueError(f"fixed_variance {fixed_variance!r} not in {FIXED_VARIANCES}")
        num_timesteps = betas.shape[0]
        timestep_map = np.arange(num_timesteps) if timestep_map is None else timestep_map
        timestep_map = np.asarray(timestep_map, dtype=np.int32)
        if timestep_map.shape != betas.shape:
            raise ValueError("timestep_map must have one entry per step")

        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        # Posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 7).
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        posterior_log_variance_clipped = np.log(
            np.append(posterior_variance[1], posterior_variance[1:])
        )
        large_variance = np.append(posterior_variance[1], betas[1:])
        fixed_log_variance = (
            posterior_log_variance_clipped
            if fixed_variance == "fixed_small"
            else np.log(large_variance)
        )
        return cls(
            betas=betas,
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=alphas_cumprod_prev,
            sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
            sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - alphas_cumprod),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1.0),
            posterior_variance=posterior_variance,
            posterior_log_variance_clipped=posterior_log_variance_clipped,
            posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            posterior_mean_coef2=(1.0 - alphas_cumprod_prev)
            * np.sqrt(alphas)
            / (1.0 - alphas_cumprod),
            log_betas=np.log(betas),
            fixed_log_variance=fixed_log_variance,
            timestep_map=timestep_map,
            model_mean_type=model_mean_type,
            learn_sigma=learn_sigma,
            fixed_variance=fixed_variance,
        )

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def respace(self, use_timesteps: Iterable[int]) -> GaussianDiffusion:
        """The process restricted to `use_timesteps` (e.g. from `space_timesteps`).

        Keeping steps k_1 < ... < k_n of this process, the new betas are
        1 - a_{k_i} / a_{k_{i-1}} (a_{k_0} = 1), so the respaced alphas_cumprod equal the
        original ones at the kept steps (official SpacedDiffusion); `timestep_map` records which
        original timestep each new step is, and is what the model is called with.
        """
        kept = np.asarray(sorted(set(use_timesteps)), dtype=np.int64)
        if kept.size < 2 or kept[0] < 0 or kept[-1] >= self.num_timesteps:
            raise ValueError(f"need at least 2 timesteps in [0, {self.num_timesteps})")
        kept_alphas_cumprod = np.asarray(self.alphas_cumprod)[kept]
        previous = np.append(1.0, kept_alphas_cumprod[:-1])
        return GaussianDiffusion.from_betas(
            1.0 - kept_alphas_cumprod / previous,
            model_mean_type=self.model_mean_type,
            learn_sigma=self.learn_sigma,
            fixed_variance=self.fixed_variance,
            timestep_map=np.asarray(self.timestep_map)[kept],
        )

    def model_timesteps(self, t: jax.Array) -> jax.Array:
        """Original-process timesteps [B] (int32) to feed the model for step indices t [B]."""
        return jnp.asarray(self.timestep_map, dtype=jnp.int32)[t]

    def sample_timesteps(self, rng: jax.Array, batch: int) -> jax.Array:
        """Step indices [batch] drawn uniformly from {0, ..., T - 1} (int32)."""
        return jax.random.randint(rng, (batch,), 0, self.num_timesteps, dtype=jnp.int32)

    # -- forward process ------------------------------------------------------------------------

    def q_sample(self, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
        """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise, a draw of q(x_t | x_0) (Ho et al. eq. 4)."""
        x0 = x0.astype(jnp.float32)
        return (
            _extract(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
            + _extract(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise
        )

    def q_posterior_mean_variance(
        self, x0: jax.Array, x_t: jax.Array, t: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0) (Ho et al., eq. 7).

        mean = coef1 x_0 + coef2 x_t; variance = beta~_t and its log, clipped at t = 0; all three
        [B, *S, C] like x_t, as official.
        """
        ndim = x_t.ndim
        mean = (
            _extract(self.posterior_mean_coef1, t, ndim) * x0
            + _extract(self.posterior_mean_coef2, t, ndim) * x_t
        )
        variance = jnp.broadcast_to(_extract(self.posterior_variance, t, ndim), x_t.shape)
        log_variance = jnp.broadcast_to(
            _extract(self.posterior_log_variance_clipped, t, ndim), x_t.shape
        )
        return mean, variance, log_variance

    # -- model parameterisations ----------------------------------------------------------------

    def split_model_output(
        self, model_output: jax.Array, channels: int
    ) -> tuple[jax.Array, jax.Array | None]:
        """(mean prediction [B, *S, C], variance values [B, *S, C] or None), as float32."""
        model_output = model_output.astype(jnp.float32)
        expected = 2 * channels if self.learn_sigma else channels
        if model_output.shape[-1] != expected:
            raise ValueError(
                f"model output has {model_output.shape[-1]} channels, expected {expected} "
                f"for {channels} data channels (learn_sigma={self.learn_sigma})"
            )
        if self.learn_sigma:
            return model_output[..., :channels], model_output[..., channels:]
        return model_output, None

    def _x0_from_prediction(self, prediction: jax.Array, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """x_0 implied by the mean prediction [B, *S, C] of `model_mean_type` at x_t."""
        ndim = x_t.ndim
        if self.model_mean_type == "x0":
            return prediction
        if self.model_mean_type == "epsilon":
            # x_0 = (x_t - sqrt(1 - a) eps) / sqrt(a) = sqrt(1/a) x_t - sqrt(1/a - 1) eps.
            return (
                _extract(self.sqrt_recip_alphas_cumprod, t, ndim) * x_t
                - _extract(self.sqrt_recipm1_alphas_cumprod, t, ndim) * prediction
            )
        # v = sqrt(a) eps - sqrt(1 - a) x_0  =>  x_0 = sqrt(a) x_t - sqrt(1 - a) v.
        return (
            _extract(self.sqrt_alphas_cumprod, t, ndim) * x_t
            - _extract(self.sqrt_one_minus_alphas_cumprod, t, ndim) * prediction
        )

    def predict_x0(self, model_output: jax.Array, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """The model's (unclipped) estimate of x_0 [B, *S, C] from its raw output at x_t."""
        prediction, _ = self.split_model_output(model_output, x_t.shape[-1])
        return self._x0_from_prediction(prediction, x_t.astype(jnp.float32), t)

    def predict_eps(self, x_t: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
        """The noise [B, *S, C] that maps x0 to x_t: (sqrt(1/a) x_t - x_0) / sqrt(1/a - 1)."""
        return (_extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - x0) / _extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim
        )

    def p_mean_variance(
        self,
        model_output: jax.Array,
        x_t: jax.Array,
        t: jax.Array,
        clip_denoised: bool = False,
    ) -> MeanVariance:
        """The model's reverse step p(x_{t-1} | x_t) from its raw output [B, *S, C or 2C].

        The mean is the posterior mean with x_0 replaced by the model's estimate (clipped to
        [-1, 1] if `clip_denoised`), Ho et al. 2020 eq. 11 in its x_0 form. The log variance is
        fixed, or with `learn_sigma` frac * log beta_t + (1 - frac) * log beta~_t with
        frac = (v + 1) / 2 (Nichol & Dhariwal 2021, eq. 15).
        """
        x_t = x_t.astype(jnp.float32)
        ndim = x_t.ndim
        prediction, variance_values = self.split_model_output(model_output, x_t.shape[-1])
        if variance_values is None:
            log_variance = jnp.broadcast_to(_extract(self.fixed_log_variance, t, ndim), x_t.shape)
        else:
            min_log = _extract(self.posterior_log_variance_clipped, t, ndim)
            max_log = _extract(self.log_betas, t, ndim)
            frac = (variance_values + 1.0) / 2.0
            log_variance = frac * max_log + (1.0 - frac) * min_log
        pred_x0 = self._x0_from_prediction(prediction, x_t, t)
        if clip_denoised:
            pred_x0 = jnp.clip(pred_x0, -1.0, 1.0)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return MeanVariance(mean=mean, log_variance=log_variance, pred_x0=pred_x0)

    # -- one reverse step of each sampler ---------------------------------------------------------

    def ddpm_step(
        self,
        model_output: jax.Array,
        x_t: jax.Array,
        t: jax.Array,
        noise: jax.Array,
        clip_denoised: bool = False,
    ) -> jax.Array:
        """Ancestral step x_{t-1} = mean + sigma noise, no noise at t = 0 (Ho et al., Alg. 2)."""
        step = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        is_last = (t == 0).reshape(t.shape + (1,) * (x_t.ndim - 1))  # [B, 1, ..., 1]
        return step.mean + jnp.where(is_last, 0.0, jnp.exp(0.5 * step.log_variance) * noise)

    def ddim_step(
        self,
        model_output: jax.Array,
        x_t: jax.Array,
        t: jax.Array,
        noise: jax.Array,
        eta: float = 0.0,
        clip_denoised: bool = False,
    ) -> jax.Array:
        """DDIM step (Song et al. 2021, eq. 12), via the predicted x_0 and its re-derived eps.

        x_{t-1} = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma noise, with
        sigma = eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev); eta = 0 is deterministic,
        eta = 1 is DDPM with the fixed-small variance.
        """
        x_t = x_t.astype(jnp.float32)
        ndim = x_t.ndim
        pred_x0 = self.p_mean_variance(model_output, x_t, t, clip_denoised).pred_x0
        # Re-derived so that x0-, v- and clipped predictions all go through one formula.
        eps = self.predict_eps(x_t, t, pred_x0)
        alpha_bar = _extract(self.alphas_cumprod, t, ndim)
        alpha_bar_prev = _extract(self.alphas_cumprod_prev, t, ndim)
        sigma = (
            eta
            * jnp.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar))
            * jnp.sqrt(1.0 - alpha_bar / alpha_bar_prev)
        )
        # Non-negative in exact arithmetic; the clamp keeps float32 rounding from giving NaN.
        eps_scale = jnp.sqrt(jnp.maximum(1.0 - alpha_bar_prev - sigma**2, 0.0))
        mean = pred_x0 * jnp.sqrt(alpha_bar_prev) + eps_scale * eps
        is_last = (t == 0).reshape(t.shape + (1,) * (ndim - 1))
        return mean + jnp.where(is_last, 0.0, sigma * noise)

    # -- training -------------------------------------------------------------------------------

    def _vb_terms_bpd(
        self, model_output: jax.Array, x0: jax.Array, x_t: jax.Array, t: jax.Array
    ) -> jax.Array:
        """One term of the variational bound [B], in bits per dimension (official _vb_terms_bpd).

        KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0 and the discretised decoder NLL
        -log p(x_0 | x_1) for t = 0 (Ho et al. 2020, eq. 5 and 13).
        """
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x0, x_t, t)
        step = self.p_mean_variance(model_output, x_t, t, clip_denoised=False)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, step.mean, step.log_variance))
        decoder_nll = -mean_flat(
            discretized_gaussian_log_likelihood(
                x0, means=step.mean, log_scales=0.5 * step.log_variance
            )
        )
        return jnp.where(t == 0, decoder_nll, kl) / math.log(2.0)

    def training_target(self, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
        """The regression target [B, *S, C] of the mean output for `model_mean_type`.

        'epsilon': the noise; 'v': sqrt(a_t) noise - sqrt(1 - a_t) x_0; 'x0': x_0.
        """
        if self.model_mean_type == "epsilon":
            return noise
        if self.model_mean_type == "x0":
            return x0
        return (
            _extract(self.sqrt_alphas_cumprod, t, x0.ndim) * noise
            - _extract(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0
        )

    def snr(self, t: jax.Array) -> jax.Array:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) at step indices t."""
        # From the float64-precomputed sqrt(1 / alpha_bar - 1): no fp32 1 - alpha_bar cancellation.
        return 1.0 / jnp.square(jnp.asarray(self.sqrt_recipm1_alphas_cumprod, jnp.float32)[t])

    def mse_weight(self, t: jax.Array, gamma: float) -> jax.Array:
        """Min-SNR-gamma loss weight (Hang et al. 2023) for this process's prediction target.

        The weight makes the loss equal to min(SNR, gamma) times the x0-space error: for an
        epsilon target min(SNR, gamma) / SNR, for x0 min(SNR, gamma), for v
        min(SNR, gamma) / (SNR + 1). It caps the weight of the many easy low-noise steps, so
        the steps that shape the sample train faster.
        """
        if gamma <= 0:
            raise ValueError(f"min_snr_gamma must be positive, got {gamma}")
        snr = self.snr(t)
        clipped = jnp.minimum(snr, gamma)
        if self.model_mean_type == "epsilon":
            return clipped / snr
        if self.model_mean_type == "x0":
            return clipped
        return clipped / (snr + 1.0)

    def training_losses(
        self,
        model_fn: ModelFn,
        x0: jax.Array,
        t: jax.Array,
        noise: jax.Array,
        y: Any = None,
        min_snr_gamma: float | None = None,
    ) -> dict[str, jax.Array]:
        """Per-example losses [B] for data x0 [B, *S, C] noised to step indices t [B].

        'mse': mean over non-batch axes of (target - prediction)^2 (Ho et al. 2020, eq. 14;
        the target follows `model_mean_type`), times `mse_weight(t, min_snr_gamma)` when a
        gamma is given. With `learn_sigma`, 'vb' is the variational-bound term with the mean
        output stop-gradient'ed, so it trains only the variance (the hybrid loss of Nichol &
        Dhariwal 2021, sec. 3.1, with lambda = 1 as in DiT; improved-diffusion's extra T / 1000
        factor is 1 for T = 1000). 'loss' = 'mse' (+ 'vb').
        """
        x0 = x0.astype(jnp.float32)
        noise = noise.astype(jnp.float32)
        x_t = self.q_sample(x0, t, noise)  # [B, *S, C]
        model_output = model_fn(x_t, self.model_timesteps(t), y)
        prediction, variance_values = self.split_model_output(model_output, x0.shape[-1])
        mse = mean_flat(jnp.square(self.training_target(x0, t, noise) - prediction))
        if min_snr_gamma is not None:
            mse = mse * self.mse_weight(t, min_snr_gamma)
        terms = {"mse": mse}
        if variance_values is not None:
            frozen_output = jnp.concatenate(
                [jax.lax.stop_gradient(prediction), variance_values], axis=-1
            )
            terms["vb"] = self._vb_terms_bpd(frozen_output, x0, x_t, t)
            terms["loss"] = terms["mse"] + terms["vb"]
        else:
            terms["loss"] = terms["mse"]
        return terms
