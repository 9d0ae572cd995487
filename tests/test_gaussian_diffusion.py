"""Gaussian diffusion against independent references: numpy float64 closed forms, scipy, hand-made
timestep lists and samplers driven by an exact (oracle) denoiser of a point-mass data set."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from scipy import integrate, stats

from mmgen_jax.diffusion import (
    GaussianDiffusion,
    approx_standard_normal_cdf,
    betas_for_schedule,
    ddim_sample,
    ddpm_sample,
    discretized_gaussian_log_likelihood,
    guided_model_output,
    normal_kl,
    space_timesteps,
)


def reference_alphas_cumprod(betas):
    """a_t = prod_{s <= t} (1 - beta_s), written as an explicit float64 loop."""
    out, running = [], 1.0
    for beta in betas:
        running *= 1.0 - beta
        out.append(running)
    return np.asarray(out)


def numpy_tanh_cdf(x):
    return 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def point_mass_eps_oracle(alphas_cumprod, points, null_label=None, null_point=None):
    """The exact eps-predictor when the data is a single point per label (points[y]).

    x_t = sqrt(a) x* + sqrt(1 - a) eps  =>  eps = (x_t - sqrt(a) x*) / sqrt(1 - a). It indexes the
    *original* alphas_cumprod with the timestep it is given, so it also checks that a respaced
    diffusion calls the model with original timesteps.
    """
    alphas_cumprod = jnp.asarray(alphas_cumprod, jnp.float32)
    points = jnp.asarray(points, jnp.float32)  # [num_labels, *S, C]

    def model_fn(x_t, timesteps, y):
        expand = (-1,) + (1,) * (x_t.ndim - 1)
        alpha = alphas_cumprod[timesteps].reshape(expand)
        if y is None:
            target = points[0]
        elif null_point is None:
            target = points[y]
        else:
            target = jnp.where((y == null_label).reshape(expand), null_point, points[y % 2])
        return (x_t - jnp.sqrt(alpha) * target) / jnp.sqrt(1.0 - alpha)

    return model_fn


# ----------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------


def test_linear_betas_match_ddpm_formula():
    betas = betas_for_schedule("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    np.testing.assert_allclose(betas, 1e-4 + (0.02 - 1e-4) * np.arange(1000) / 999, rtol=1e-12)
    assert betas[0] == pytest.approx(1e-4, rel=1e-12)
    assert betas[-1] == pytest.approx(0.02, rel=1e-12)
    # Scaled by 1000 / T for other lengths.
    short = betas_for_schedule("linear", 250)
    assert short[0] == pytest.approx(4e-4) and short[-1] == pytest.approx(0.08)
    alphas_cumprod = GaussianDiffusion.from_betas(betas).alphas_cumprod
    assert np.all(np.diff(alphas_cumprod) < 0)
    np.testing.assert_allclose(alphas_cumprod, reference_alphas_cumprod(betas), rtol=1e-12)


def test_cosine_betas_match_nichol_dhariwal():
    steps = 1000
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    expected = [min(1 - f((i + 1) / steps) / f(i / steps), 0.999) for i in range(steps)]
    betas = betas_for_schedule("cosine", steps)
    np.testing.assert_allclose(betas, expected, rtol=1e-12, atol=0)
    assert betas.max() == pytest.approx(0.999)  # the cap bites at the last step
    alphas_cumprod = GaussianDiffusion.from_betas(betas).alphas_cumprod
    assert np.all(np.diff(alphas_cumprod) < 0)
    # Before the cap, a_t = f((t + 1) / T) / f(0) (eq. 17).
    t = np.arange(steps - 1)
    np.testing.assert_allclose(
        alphas_cumprod[:-1], [f((i + 1) / steps) / f(0) for i in t], rtol=1e-9
    )


def test_unknown_schedule_raises():
    with pytest.raises(ValueError):
        betas_for_schedule("quadratic")


# ----------------------------------------------------------------------------------------------
# Forward process and posterior
# ----------------------------------------------------------------------------------------------


def test_q_sample_closed_form_and_moments():
    betas = betas_for_schedule("cosine", 100)
    diffusion = GaussianDiffusion.from_betas(betas)
    alphas_cumprod = reference_alphas_cumprod(betas)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (3, 4, 2)).astype(np.float32)
    noise = rng.standard_normal((3, 4, 2)).astype(np.float32)
    t = np.array([0, 50, 99])
    expected = (
        np.sqrt(alphas_cumprod[t])[:, None, None] * x0
        + np.sqrt(1 - alphas_cumprod[t])[:, None, None] * noise
    )
    out = diffusion.q_sample(jnp.asarray(x0), jnp.asarray(t), jnp.asarray(noise))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)

    # Moments of many draws: mean sqrt(a) x0, variance 1 - a.
    draws = 200_000
    for step in (10, 70):
        samples = diffusion.q_sample(
            jnp.full((draws, 1), 0.7),
            jnp.full((draws,), step),
            jax.random.normal(jax.random.key(step), (draws, 1)),
        )
        std_error = np.sqrt((1 - alphas_cumprod[step]) / draws)
        assert float(samples.mean()) == pytest.approx(
            0.7 * np.sqrt(alphas_cumprod[step]), abs=5 * std_error
        )
        assert float(samples.var()) == pytest.approx(1 - alphas_cumprod[step], rel=0.02)


def test_posterior_matches_bayes_rule():
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0), a product of Gaussians."""
    betas = betas_for_schedule("linear", 200)
    diffusion = GaussianDiffusion.from_betas(betas)
    alphas_cumprod = reference_alphas_cumprod(betas)
    rng = np.random.default_rng(1)
    t = np.array([1, 2, 37, 120, 199])
    x0 = rng.uniform(-1, 1, (5, 3, 3, 2))
    x_t = rng.standard_normal((5, 3, 3, 2))

    prev = alphas_cumprod[t - 1][:, None, None, None]
    beta = betas[t][:, None, None, None]
    # Prior N(sqrt(prev) x0, 1 - prev) times likelihood N(x_t; sqrt(1 - beta) x_{t-1}, beta).
    precision = 1 / (1 - prev) + (1 - beta) / beta
    variance = 1 / precision
    mean = variance * (np.sqrt(prev) * x0 / (1 - prev) + np.sqrt(1 - beta) * x_t / beta)

    out_mean, out_var, out_log_var = diffusion.q_posterior_mean_variance(
        jnp.asarray(x0, jnp.float32), jnp.asarray(x_t, jnp.float32), jnp.asarray(t)
    )
    np.testing.assert_allclose(out_mean, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_var, np.broadcast_to(variance, mean.shape), rtol=1e-5)
    np.testing.assert_allclose(out_log_var, np.broadcast_to(np.log(variance), mean.shape), 1e-5)

    # t = 0: x_{-1} is x_0 itself; the log variance is clipped to that of t = 1.
    out_mean, out_var, out_log_var = diffusion.q_posterior_mean_variance(
        jnp.asarray(x0, jnp.float32), jnp.asarray(x_t, jnp.float32), jnp.zeros(5, jnp.int32)
    )
    np.testing.assert_allclose(out_mean, x0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out_var, 0.0)
    var_1 = betas[1] * (1 - alphas_cumprod[0]) / (1 - alphas_cumprod[1])
    np.testing.assert_allclose(out_log_var, np.log(var_1), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Likelihood utilities
# ----------------------------------------------------------------------------------------------


def test_normal_kl_closed_form_and_integral():
    rng = np.random.default_rng(2)
    mean1, mean2 = rng.standard_normal(20), rng.standard_normal(20)
    var1, var2 = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    expected = 0.5 * np.log(var2 / var1) + (var1 + (mean1 - mean2) ** 2) / (2 * var2) - 0.5
    as32 = lambda a: jnp.asarray(a, jnp.float32)
    out = normal_kl(as32(mean1), as32(np.log(var1)), as32(mean2), as32(np.log(var2)))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # Scalars broadcast: KL to the standard normal.
    out = normal_kl(as32(mean1), as32(np.log(var1)), 0.0, 0.0)
    np.testing.assert_allclose(out, 0.5 * (var1 + mean1**2 - 1 - np.log(var1)), rtol=1e-5)

    # One case by numerical integration of p log(p / q).
    p, q = stats.norm(0.3, 0.8), stats.norm(-0.5, 1.3)
    numeric, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -20, 20)
    kl = normal_kl(0.3, jnp.log(0.8**2), -0.5, jnp.log(1.3**2))
    assert float(kl) == pytest.approx(numeric, rel=1e-5)


def test_discretized_gaussian_log_likelihood():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, 4000) / 127.5 - 1.0  # uint8 pixels rescaled to [-1, 1]
    x[:3] = [-1.0, 1.0, 0.0]
    means = np.clip(x + rng.normal(0, 0.05, x.shape), -1, 1)
    log_scales = rng.uniform(np.log(0.01), np.log(0.5), x.shape)
    out = np.asarray(
        discretized_gaussian_log_likelihood(
            jnp.asarray(x, jnp.float32),
            means=jnp.asarray(means, jnp.float32),
            log_scales=jnp.asarray(log_scales, jnp.float32),
        )
    )
    assert np.all(out <= 0)

    def reference(cdf):
        stdv = np.exp(log_scales)
        upper = cdf((x - means + 1 / 255) / stdv)
        lower = cdf((x - means - 1 / 255) / stdv)
        interior = np.log(np.maximum(upper - lower, 1e-12))
        return np.where(
            x < -0.999,
            np.log(np.maximum(upper, 1e-12)),
            np.where(x > 0.999, np.log(np.maximum(1 - lower, 1e-12)), interior),
        )

    # The official formula (tanh approximation of the CDF), re-implemented in float64. Far in
    # the tails float32 cancellation in cdf_plus - cdf_min dominates (as in the official code),
    # so compare where the bin holds non-negligible mass, and the clamped floor elsewhere.
    official = reference(numpy_tanh_cdf)
    likely = official > -8
    assert likely.mean() > 0.9
    np.testing.assert_allclose(out[likely], official[likely], rtol=2e-4, atol=2e-4)
    assert np.all(out[~likely] < -7) and np.all(out >= np.log(1e-12) - 1e-4)
    # ...and bin probabilities within the CDF approximation error of the exact Gaussian ones.
    np.testing.assert_allclose(np.exp(out), np.exp(reference(stats.norm.cdf)), atol=5e-4)
    np.testing.assert_allclose(
        approx_standard_normal_cdf(jnp.linspace(-5, 5, 101)),
        stats.norm.cdf(np.linspace(-5, 5, 101)),
        atol=2e-4,
    )


# ----------------------------------------------------------------------------------------------
# Parameterisations and the model's reverse step
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mean_type", ["epsilon", "v", "x0"])
def test_parameterisations_recover_x0_from_true_target(mean_type):
    betas = betas_for_schedule("cosine", 1000)
    diffusion = GaussianDiffusion.from_betas(betas, model_mean_type=mean_type)
    alphas_cumprod = reference_alphas_cumprod(betas)
    rng = np.random.default_rng(4)
    x0 = rng.uniform(-1, 1, (4, 5, 3))
    noise = rng.standard_normal((4, 5, 3))
    t = np.array([0, 10, 500, 980])
    alpha = alphas_cumprod[t][:, None, None]
    x_t = np.sqrt(alpha) * x0 + np.sqrt(1 - alpha) * noise
    target = {
        "epsilon": noise,
        "v": np.sqrt(alpha) * noise - np.sqrt(1 - alpha) * x0,
        "x0": x0,
    }[mean_type]
    as32 = lambda a: jnp.asarray(a, jnp.float32)
    np.testing.assert_allclose(
        diffusion.training_target(as32(x0), jnp.asarray(t), as32(noise)), target, atol=1e-5
    )
    pred_x0 = diffusion.predict_x0(as32(target), as32(x_t), jnp.asarray(t))
    np.testing.assert_allclose(pred_x0, x0, atol=1e-3 if mean_type == "epsilon" else 1e-5)

    # The reverse mean is the true posterior mean given the recovered x0.
    step = diffusion.p_mean_variance(as32(target), as32(x_t), jnp.asarray(t))
    true_mean, _, true_log_var = diffusion.q_posterior_mean_variance(
        as32(x0), as32(x_t), jnp.asarray(t)
    )
    np.testing.assert_allclose(step.mean, true_mean, atol=1e-4)
    np.testing.assert_allclose(step.log_variance, true_log_var)


def test_learned_range_and_fixed_variances():
    betas = betas_for_schedule("linear", 100)
    alphas_cumprod = reference_alphas_cumprod(betas)
    prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_var = betas * (1 - prev) / (1 - alphas_cumprod)
    clipped_log = np.log(np.append(posterior_var[1], posterior_var[1:]))
    t = jnp.array([0, 1, 50, 99])
    x_t = jnp.zeros((4, 2, 2))
    eps = jnp.zeros((4, 2, 2))

    learned = GaussianDiffusion.from_betas(betas, learn_sigma=True)
    for value, frac in ((-1.0, 0.0), (1.0, 1.0), (0.0, 0.5)):
        output = jnp.concatenate([eps, jnp.full((4, 2, 2), value)], axis=-1)
        log_var = learned.p_mean_variance(output, x_t, t).log_variance
        expected = frac * np.log(betas[t]) + (1 - frac) * clipped_log[t]
        np.testing.assert_allclose(log_var[:, 0, 0], expected, rtol=1e-5)

    small = GaussianDiffusion.from_betas(betas, fixed_variance="fixed_small")
    log_var = small.p_mean_variance(eps, x_t, t).log_variance
    np.testing.assert_allclose(log_var[:, 0, 0], clipped_log[t], rtol=1e-6)
    large = GaussianDiffusion.from_betas(betas, fixed_variance="fixed_large")
    expected = np.log(np.append(posterior_var[1], betas[1:]))[t]
    log_var = large.p_mean_variance(eps, x_t, t).log_variance
    np.testing.assert_allclose(log_var[:, 0, 0], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        learned.p_mean_variance(eps, x_t, t)  # C channels where 2C are expected


# ----------------------------------------------------------------------------------------------
# Training losses
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mean_type", ["epsilon", "v", "x0"])
def test_mse_loss_targets(mean_type):
    betas = betas_for_schedule("linear", 1000)
    diffusion = GaussianDiffusion.from_betas(betas, model_mean_type=mean_type)
    alphas_cumprod = reference_alphas_cumprod(betas)
    rng = np.random.default_rng(5)
    x0 = rng.uniform(-1, 1, (3, 4, 4, 2))
    noise = rng.standard_normal((3, 4, 4, 2))
    t = np.array([3, 400, 999])
    alpha = alphas_cumprod[t][:, None, None, None]
    target = {
        "epsilon": noise,
        "v": np.sqrt(alpha) * noise - np.sqrt(1 - alpha) * x0,
        "x0": x0,
    }[mean_type]
    seen = {}

    def zero_model(x_t, timesteps, y):
        seen["timesteps"] = timesteps
        return jnp.zeros_like(x_t)

    losses = diffusion.training_losses(
        zero_model, jnp.asarray(x0, jnp.float32), jnp.asarray(t), jnp.asarray(noise, jnp.float32)
    )
    assert set(losses) == {"mse", "loss"}
    np.testing.assert_allclose(losses["mse"], np.mean(target**2, axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(losses["loss"], losses["mse"])
    np.testing.assert_array_equal(seen["timesteps"], t)


@pytest.mark.parametrize("mean_type", ["epsilon", "v", "x0"])
def test_min_snr_weighted_loss_is_capped_snr_times_x0_error(mean_type):
    """Min-SNR-gamma: whatever the target, the weighted loss is min(SNR, gamma) * |x0 error|^2,
    with the x0 prediction recovered from the model output in numpy."""
    betas = betas_for_schedule("linear", 1000)
    diffusion = GaussianDiffusion.from_betas(betas, model_mean_type=mean_type)
    alphas_cumprod = reference_alphas_cumprod(betas)
    rng = np.random.default_rng(6)
    x0 = rng.uniform(-1, 1, (4, 3, 2))
    noise = rng.standard_normal((4, 3, 2))
    output = rng.standard_normal((4, 3, 2))
    t = np.array([0, 100, 300, 999])  # SNR from ~1e4 down to ~4e-5: both sides of gamma = 5
    alpha = alphas_cumprod[t][:, None, None]
    x_t = np.sqrt(alpha) * x0 + np.sqrt(1 - alpha) * noise
    x0_pred = {
        "epsilon": (x_t - np.sqrt(1 - alpha) * output) / np.sqrt(alpha),
        "v": np.sqrt(alpha) * x_t - np.sqrt(1 - alpha) * output,
        "x0": output,
    }[mean_type]
    snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
    expected = np.minimum(snr, 5.0) * np.mean((x0_pred - x0) ** 2, axis=(1, 2))

    losses = diffusion.training_losses(
        lambda x_t, timesteps, y: jnp.asarray(output, jnp.float32),
        jnp.asarray(x0, jnp.float32),
        jnp.asarray(t),
        jnp.asarray(noise, jnp.float32),
        min_snr_gamma=5.0,
    )
    np.testing.assert_allclose(losses["mse"], expected, rtol=2e-4)
    np.testing.assert_allclose(diffusion.snr(jnp.asarray(t)), snr, rtol=1e-5)
    with pytest.raises(ValueError, match="min_snr_gamma"):
        diffusion.mse_weight(jnp.asarray(t), 0.0)


def test_hybrid_loss_vb_term_and_stop_gradient():
    betas = betas_for_schedule("linear", 1000)
    diffusion = GaussianDiffusion.from_betas(betas, learn_sigma=True)
    alphas_cumprod = reference_alphas_cumprod(betas)
    prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_var = betas * (1 - prev) / (1 - alphas_cumprod)
    clipped_log = np.log(np.append(posterior_var[1], posterior_var[1:]))
    coef1 = betas * np.sqrt(prev) / (1 - alphas_cumprod)
    coef2 = (1 - prev) * np.sqrt(1 - betas) / (1 - alphas_cumprod)

    rng = np.random.default_rng(6)
    x0 = rng.integers(0, 256, (4, 3, 3, 2)) / 127.5 - 1.0
    noise = rng.standard_normal(x0.shape)
    eps_pred = noise + 0.1 * rng.standard_normal(x0.shape)
    var_values = rng.uniform(-1, 1, x0.shape)
    t = np.array([0, 1, 300, 999])
    params = {
        "eps": jnp.asarray(eps_pred, jnp.float32),
        "var": jnp.asarray(var_values, jnp.float32),
    }

    def losses_for(params):
        model_fn = lambda x_t, timesteps, y: jnp.concatenate([params["eps"], params["var"]], -1)
        return diffusion.training_losses(
            model_fn, jnp.asarray(x0, jnp.float32), jnp.asarray(t), jnp.asarray(noise, jnp.float32)
        )

    @jax.jit
    def losses_and_gradients(params):
        """The losses, and the gradients of sum('vb') and of sum('mse') w.r.t. the outputs."""
        losses, pullback = jax.vjp(losses_for, params)

        def only(name):
            return {
                k: (jnp.ones_like if k == name else jnp.zeros_like)(v) for k, v in losses.items()
            }

        return losses, pullback(only("vb"))[0], pullback(only("mse"))[0]

    losses, grad_vb, grad_mse = losses_and_gradients(params)

    # Independent float64 computation of the same bound terms.
    e = lambda a: a[t][:, None, None, None]
    alpha = e(alphas_cumprod)
    x_t = np.sqrt(alpha) * x0 + np.sqrt(1 - alpha) * noise
    pred_x0 = (x_t - np.sqrt(1 - alpha) * eps_pred) / np.sqrt(alpha)
    model_mean = e(coef1) * pred_x0 + e(coef2) * x_t
    frac = (var_values + 1) / 2
    model_log_var = frac * np.log(e(betas)) + (1 - frac) * e(clipped_log)
    true_mean = e(coef1) * x0 + e(coef2) * x_t
    true_var = np.exp(e(clipped_log))
    model_var = np.exp(model_log_var)
    kl = 0.5 * (
        np.log(model_var / true_var) + (true_var + (true_mean - model_mean) ** 2) / model_var
    )
    kl = np.mean(kl - 0.5, axis=(1, 2, 3)) / np.log(2)
    stdv = np.exp(0.5 * model_log_var)
    upper = numpy_tanh_cdf((x0 - model_mean + 1 / 255) / stdv)
    lower = numpy_tanh_cdf((x0 - model_mean - 1 / 255) / stdv)
    log_probs = np.where(
        x0 < -0.999,
        np.log(np.maximum(upper, 1e-12)),
        np.where(
            x0 > 0.999,
            np.log(np.maximum(1 - lower, 1e-12)),
            np.log(np.maximum(upper - lower, 1e-12)),
        ),
    )
    nll = -np.mean(log_probs, axis=(1, 2, 3)) / np.log(2)
    expected_vb = np.where(t == 0, nll, kl)
    np.testing.assert_allclose(losses["vb"], expected_vb, rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(
        losses["mse"], np.mean((noise - eps_pred) ** 2, axis=(1, 2, 3)), rtol=1e-5
    )
    np.testing.assert_allclose(losses["loss"], losses["mse"] + losses["vb"], rtol=1e-6)

    # The vb term trains only the variance; the mse term only the mean.
    assert float(jnp.abs(grad_vb["eps"]).max()) == 0.0
    assert float(jnp.abs(grad_vb["var"]).max()) > 0.0
    assert float(jnp.abs(grad_mse["var"]).max()) == 0.0


def test_sample_timesteps_uniform():
    diffusion = GaussianDiffusion.from_betas(betas_for_schedule("cosine", 10))
    t = diffusion.sample_timesteps(jax.random.key(0), 20_000)
    assert t.shape == (20_000,) and t.dtype == jnp.int32
    counts = np.bincount(np.asarray(t), minlength=10)
    assert counts.shape == (10,) and np.all(np.abs(counts - 2000) < 200)


# ----------------------------------------------------------------------------------------------
# Respacing
# ----------------------------------------------------------------------------------------------


def test_space_timesteps_hand_checked():
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert sorted(space_timesteps(1000, "ddim50"))[:3] == [0, 20, 40]
    assert max(space_timesteps(1000, "ddim50")) == 980
    assert space_timesteps(1000, "ddim25") == set(range(0, 1000, 40))
    assert space_timesteps(1000, "ddim1000") == set(range(1000))
    assert space_timesteps(10, [4]) == {0, 3, 6, 9}
    # Sections of 5 and 5 steps: strides 4 and 2.
    assert space_timesteps(10, [2, 3]) == {0, 4, 5, 7, 9}
    assert space_timesteps(10, "2,3") == {0, 4, 5, 7, 9}
    # Stride 49.5: Python's round(49.5) == 50 (half to even), as the official code.
    assert space_timesteps(100, [3]) == {0, 50, 99}
    assert space_timesteps(1000, "4") == {0, 333, 666, 999}
    # 300 steps in three sections of 100.
    steps = sorted(space_timesteps(300, [10, 15, 20]))
    assert len(steps) == 45 and steps[:3] == [0, 11, 22] and steps[9] == 99 and steps[10] == 100
    with pytest.raises(ValueError):
        space_timesteps(1000, "ddim600")  # no integer stride gives 600
    with pytest.raises(ValueError):
        space_timesteps(10, [6, 1])


def test_respaced_alphas_cumprod_match_original():
    base = GaussianDiffusion.from_betas(betas_for_schedule("cosine", 1000), learn_sigma=True)
    kept = space_timesteps(1000, "ddim50")
    spaced = base.respace(kept)
    kept = sorted(kept)
    assert spaced.num_timesteps == 50 and spaced.learn_sigma
    np.testing.assert_array_equal(spaced.timestep_map, kept)
    np.testing.assert_allclose(spaced.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-10)
    np.testing.assert_array_equal(spaced.model_timesteps(jnp.array([0, 49])), [0, 980])
    # Respacing a respaced process keeps original timesteps.
    twice = spaced.respace([0, 10, 49])
    np.testing.assert_array_equal(twice.timestep_map, [0, 200, 980])
    np.testing.assert_allclose(twice.alphas_cumprod, base.alphas_cumprod[[0, 200, 980]], 1e-10)


# ----------------------------------------------------------------------------------------------
# Samplers with an oracle denoiser
# ----------------------------------------------------------------------------------------------


def test_ddim_with_oracle_returns_the_data_point():
    point = np.random.default_rng(7).uniform(-1, 1, (1, 4, 4, 3))

    # The diffusions are pytrees, so one compiled sampler serves both schedules and both etas.
    @jax.jit
    def sample(base, spaced, eta, rng):
        model_fn = point_mass_eps_oracle(base.alphas_cumprod, point)
        return ddim_sample(model_fn, spaced, (6, 4, 4, 3), rng, eta=eta)

    for schedule in ("linear", "cosine"):
        base = GaussianDiffusion.from_betas(betas_for_schedule(schedule, 1000))
        spaced = base.respace(space_timesteps(1000, "ddim50"))
        # Deterministic DDIM, and stochastic DDIM (eta = 1): the oracle always predicts the point.
        for seed, eta in enumerate((0.0, 1.0)):
            out = sample(base, spaced, eta, jax.random.key(seed))
            assert out.shape == (6, 4, 4, 3) and out.dtype == jnp.float32
            np.testing.assert_allclose(out, np.broadcast_to(point, out.shape), atol=1e-4)


@pytest.mark.parametrize("shape", [(4, 16, 2), (2, 3, 4, 4, 1)])
def test_ddpm_with_oracle_converges_for_any_rank(shape):
    base = GaussianDiffusion.from_betas(betas_for_schedule("linear", 1000))
    point = np.random.default_rng(8).uniform(-1, 1, (1, *shape[1:]))
    model_fn = point_mass_eps_oracle(base.alphas_cumprod, point)
    sample = jax.jit(lambda rng: ddpm_sample(model_fn, base, shape, rng))(jax.random.key(2))
    np.testing.assert_allclose(sample, np.broadcast_to(point, shape), atol=1e-4)


def _toy_conditional_model(x_t, timesteps, y):
    """A nonlinear, label-dependent eps model with 2C outputs (learned variance)."""
    expand = (-1,) + (1,) * (x_t.ndim - 1)
    phase = (timesteps.astype(jnp.float32) / 1000.0 + 0.1 * y.astype(jnp.float32)).reshape(expand)
    eps = 0.5 * jnp.tanh(x_t) + 0.2 * jnp.sin(phase + x_t)
    return jnp.concatenate([eps, jnp.tanh(x_t * phase)], axis=-1)


def test_sampling_is_deterministic_and_independent_of_sharding():
    base = GaussianDiffusion.from_betas(betas_for_schedule("linear", 1000), learn_sigma=True)
    spaced = base.respace(space_timesteps(1000, [25]))
    shape = (16, 4, 4, 2)
    labels = jnp.arange(16, dtype=jnp.int32) % 5

    def sample(rng, y):
        return ddpm_sample(
            _toy_conditional_model, spaced, shape, rng, y=y, cfg_scale=2.5, null_label=5
        )

    reference = jax.jit(sample)(jax.random.key(3), labels)
    again = jax.jit(sample)(jax.random.key(3), labels)
    other_seed = jax.jit(sample)(jax.random.key(4), labels)
    np.testing.assert_array_equal(reference, again)
    assert np.all(np.isfinite(reference))
    assert float(jnp.abs(reference - other_seed).max()) > 0.1

    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    sharded_labels = jax.device_put(labels, batch_sharding)
    sharded = jax.jit(sample, out_shardings=batch_sharding)(jax.random.key(3), sharded_labels)
    assert sharded.sharding.is_equivalent_to(batch_sharding, sharded.ndim)
    np.testing.assert_allclose(sharded, reference, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Classifier-free guidance
# ----------------------------------------------------------------------------------------------


def test_guidance_formula_on_known_outputs():
    diffusion = GaussianDiffusion.from_betas(betas_for_schedule("cosine", 10), learn_sigma=True)
    null_label = 7
    cond_value = np.array([1.0, 2.0, 3.0, 4.0, 0.5, 0.6, 0.7, 0.8])  # eps (4) | variance (4)
    uncond_value = np.array([-1.0, 0.0, 1.0, 2.0, -0.5, -0.6, -0.7, -0.8])
    calls = []

    def model_fn(x_t, timesteps, y):
        calls.append((x_t.shape, np.asarray(y)))
        is_null = (y == null_label)[:, None, None, None]
        return jnp.where(is_null, uncond_value, cond_value) * jnp.ones(x_t.shape[:-1] + (8,))

    x_t = jnp.zeros((3, 2, 2, 4))
    t = jnp.array([0, 5, 9])
    y = jnp.array([1, 2, 3])
    scale = 4.0
    guided = uncond_value[:4] + scale * (cond_value[:4] - uncond_value[:4])

    out = guided_model_output(model_fn, diffusion, x_t, t, y, scale, null_label)
    assert calls[-1][0] == (6, 2, 2, 4)
    np.testing.assert_array_equal(calls[-1][1], [1, 2, 3, 7, 7, 7])
    np.testing.assert_allclose(out[..., :4], np.broadcast_to(guided, (3, 2, 2, 4)), rtol=1e-6)
    np.testing.assert_allclose(out[..., 4:], np.broadcast_to(cond_value[4:], (3, 2, 2, 4)))

    # DiT's forward_with_cfg: only the first 3 channels are guided, the rest stay conditional.
    out = guided_model_output(model_fn, diffusion, x_t, t, y, scale, null_label, cfg_channels=3)
    np.testing.assert_allclose(out[..., :3], np.broadcast_to(guided[:3], (3, 2, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(out[..., 3:], np.broadcast_to(cond_value[3:], (3, 2, 2, 5)))

    # Scale 1 is the plain conditional model, called once on the undoubled batch.
    out = guided_model_output(model_fn, diffusion, x_t, t, y)
    assert calls[-1][0] == (3, 2, 2, 4)
    np.testing.assert_allclose(out, np.broadcast_to(cond_value, (3, 2, 2, 8)))
    with pytest.raises(ValueError):
        guided_model_output(model_fn, diffusion, x_t, t, y, scale)  # no null label


def test_guided_ddim_with_oracles_lands_on_the_extrapolated_point():
    """eps is affine in the target point, so guiding eps moves the point: x_u + s (x_c - x_u)."""
    base = GaussianDiffusion.from_betas(betas_for_schedule("cosine", 1000))
    spaced = base.respace(space_timesteps(1000, "ddim25"))
    rng = np.random.default_rng(9)
    points = rng.uniform(-1, 1, (2, 3, 3, 4))  # conditional point per label parity
    null_point = rng.uniform(-1, 1, (3, 3, 4))
    null_label = 10
    model_fn = point_mass_eps_oracle(base.alphas_cumprod, points, null_label, null_point)
    y = jnp.array([0, 1, 2, 3])
    scale = 1.5

    def sample(cfg_channels):
        return jax.jit(
            lambda rng: ddim_sample(
                model_fn, spaced, (4, 3, 3, 4), rng, y, scale, null_label, False, cfg_channels
            )
        )(jax.random.key(5))

    cond = points[np.asarray(y) % 2]
    expected = null_point + scale * (cond - null_point)
    np.testing.assert_allclose(sample(None), expected, atol=1e-4)
    partial = sample(3)
    np.testing.assert_allclose(partial[..., :3], expected[..., :3], atol=1e-4)
    np.testing.assert_allclose(partial[..., 3:], cond[..., 3:], atol=1e-3)
