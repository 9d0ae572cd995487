"""Masked discrete diffusion (MDLM) and the token DiT, against numpy and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmgen_jax.diffusion import masked
from mmgen_jax.models.token_dit import TokenDiT

VOCAB = 5  # real ids 0..4, mask id 5
MASK = VOCAB


@pytest.mark.parametrize("kind", masked.SCHEDULES)
def test_schedule_endpoints_and_derivative(kind):
    schedule = masked.MaskSchedule(kind, eps=1e-3)
    assert float(schedule.alpha(0.0)) == 1.0
    np.testing.assert_allclose(float(schedule.alpha(1.0)), 1e-3, rtol=1e-4)
    t = np.linspace(0.05, 0.95, 7)
    h = 1e-3
    finite_difference = (
        np.asarray(schedule.alpha(t + h), np.float64) - np.asarray(schedule.alpha(t - h))
    ) / (2 * h)
    np.testing.assert_allclose(schedule.alpha_derivative(t), finite_difference, rtol=2e-3)
    if kind == "loglinear":  # -alpha'/(1 - alpha) = 1/t exactly
        np.testing.assert_allclose(schedule.loss_weight(t), 1.0 / t, rtol=1e-5)


def test_antithetic_times_are_evenly_spread():
    t = np.asarray(masked.sample_times(jax.random.PRNGKey(3), 8, t_min=0.0))
    spacing = np.diff(np.sort(t))
    np.testing.assert_allclose(spacing, 1.0 / 8, atol=1e-6)
    t = np.asarray(masked.sample_times(jax.random.PRNGKey(3), 64, t_min=0.01))
    assert t.min() >= 0.01 and t.max() <= 1.0


def test_importance_sampled_times_keep_expectations_unbiased():
    proposal = dict(t_min=0.01, low_t_max=0.25, low_t_fraction=0.75)
    t = np.asarray(masked.sample_times(jax.random.PRNGKey(3), 4000, **proposal))
    assert t.min() >= 0.01 and t.max() <= 1.0
    assert np.sum(t < 0.25) == 3000  # antithetic: exactly the requested fraction
    weights = np.asarray(masked.time_importance_weights(t, **proposal))
    np.testing.assert_allclose(weights[t < 0.25], 0.24 / 0.99 / 0.75, rtol=1e-6)
    np.testing.assert_allclose(weights[t >= 0.25], 0.75 / 0.99 / 0.25, rtol=1e-6)
    # E_q[w(t) g(t)] = E_uniform[g(t)] on [0.01, 1], here for g(t) = t^2 and g(t) = 1/t.
    np.testing.assert_allclose(np.mean(weights * t**2), (1 - 0.01**3) / 3 / 0.99, rtol=1e-3)
    np.testing.assert_allclose(np.mean(weights / t), np.log(100) / 0.99, rtol=1e-3)
    # nelbo() reweights each sequence by its time's weight; 'proposal_weighted' does not.
    terms = jax.jit(
        lambda key: masked.nelbo(
            lambda z, t, y: jnp.zeros((*z.shape, VOCAB + 1)),
            jnp.zeros((64, 8), jnp.int32),
            key,
            masked.MaskSchedule(),
            MASK,
            **proposal,
        )
    )(jax.random.PRNGKey(0))
    kept = np.asarray(terms["proposal_weighted"]) > 0
    ratios = np.asarray(terms["nelbo"])[kept] / np.asarray(terms["proposal_weighted"])[kept]
    expected = [0.24 / 0.99 / 0.75, 0.75 / 0.99 / 0.25]
    np.testing.assert_allclose(np.unique(np.round(ratios, 3)), expected, rtol=1e-3)
    with pytest.raises(ValueError, match="go together"):
        masked.sample_times(jax.random.PRNGKey(0), 4, low_t_max=0.2)
    with pytest.raises(ValueError, match="low_t_fraction=1.5"):
        masked.time_importance_weights(t, low_t_max=0.2, low_t_fraction=1.5)


def _numpy_nelbo(logits, x, u, t, eps):
    """MDLM NELBO per sequence with the log-linear schedule, written out in numpy."""
    alpha = 1.0 - (1.0 - eps) * t  # [B]
    masked_positions = u < (1.0 - alpha)[:, None]  # [B, L]
    real = logits[..., :VOCAB].astype(np.float64)  # the mask logit is dropped (SUBS)
    log_probs = real - np.log(np.exp(real).sum(-1, keepdims=True))
    target = np.take_along_axis(log_probs, x[..., None], axis=-1)[..., 0]
    weight = (1.0 - eps) / (1.0 - alpha)  # -alpha' / (1 - alpha)
    return weight * np.where(masked_positions, -target, 0.0).sum(-1)


def test_nelbo_matches_numpy():
    rng = np.random.default_rng(0)
    batch, length = 4, 6
    x = rng.integers(0, VOCAB, (batch, length))
    logits = rng.normal(size=(batch, length, VOCAB + 1)).astype(np.float32)
    u = rng.uniform(size=(batch, length)).astype(np.float32)
    t = np.array([0.1, 0.4, 0.7, 0.95], np.float32)
    schedule = masked.MaskSchedule("loglinear", eps=1e-3)
    z_t = masked.mask_with_uniforms(jnp.asarray(x), jnp.asarray(t), schedule, MASK, jnp.asarray(u))
    log_probs = masked.subs_log_probs(jnp.asarray(logits), z_t, MASK)
    ours = masked.nelbo_terms(log_probs, jnp.asarray(x), z_t, jnp.asarray(t), schedule, MASK)
    np.testing.assert_allclose(ours, _numpy_nelbo(logits, x, u, t, 1e-3), rtol=1e-5)
    assert np.all(np.asarray(z_t)[u < 0.05] == MASK)  # t >= 0.1: at least these are masked


def test_subs_carries_unmasked_tokens_and_never_predicts_mask():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(1, 3, VOCAB + 1)), jnp.float32)
    z_t = jnp.asarray([[2, MASK, 4]])
    probs = np.exp(np.asarray(masked.subs_log_probs(logits, z_t, MASK)))
    np.testing.assert_array_equal(probs[0, 0], np.eye(VOCAB + 1)[2])
    np.testing.assert_array_equal(probs[0, 2], np.eye(VOCAB + 1)[4])
    assert probs[0, 1, MASK] == 0.0
    np.testing.assert_allclose(probs[0, 1].sum(), 1.0, rtol=1e-6)


def test_perfect_denoiser_has_zero_loss():
    x = jnp.asarray(np.random.default_rng(2).integers(0, VOCAB, (8, 7)))

    def perfect(z_t, t, y):  # knows x: all its mass on the clean token
        return jnp.where(jax.nn.one_hot(x, VOCAB + 1) > 0, 0.0, -1e9)

    terms = masked.nelbo(perfect, x, jax.random.PRNGKey(0), masked.MaskSchedule(), MASK)
    assert float(jnp.sum(terms["masked_fraction"])) > 0  # something was masked
    np.testing.assert_array_equal(terms["nelbo"], 0.0)


def test_guidance_combines_log_probs_like_numpy():
    rng = np.random.default_rng(4)
    cond_logits = rng.normal(size=(2, 3, VOCAB + 1)).astype(np.float32)
    uncond_logits = rng.normal(size=(2, 3, VOCAB + 1)).astype(np.float32)
    z_t = jnp.full((2, 3), MASK)

    def model_fn(z, t, y):  # rows with the null label (9) get the unconditional logits
        return jnp.where(
            (y == 9)[:, None, None],
            jnp.tile(uncond_logits, (2, 1, 1)),
            jnp.tile(cond_logits, (2, 1, 1)),
        )

    guided = masked.guided_log_probs(
        model_fn, z_t, jnp.zeros(2), MASK, jnp.array([1, 2]), cfg_scale=2.0, null_label=9
    )

    def log_softmax(v):
        v = v[..., :VOCAB].astype(np.float64)
        return v - np.log(np.exp(v).sum(-1, keepdims=True))

    combined = log_softmax(uncond_logits) + 2.0 * (
        log_softmax(cond_logits) - log_softmax(uncond_logits)
    )
    expected = combined - np.log(np.exp(combined).sum(-1, keepdims=True))
    np.testing.assert_allclose(np.asarray(guided)[..., :VOCAB], expected, rtol=1e-4, atol=1e-5)
    assert np.all(np.isneginf(np.asarray(guided)[..., MASK]))


def _perturbed_model(time_conditioned: bool, shape=(4, 8)):
    model = TokenDiT(
        vocab_size=VOCAB, hidden_size=32, depth=1, num_heads=2, time_conditioned=time_conditioned
    )

    @jax.jit
    def init(key):
        variables = model.init(key, jnp.zeros(shape, jnp.int32), jnp.zeros(shape[0]))
        # The adaLN-Zero and final layers start at zero; perturb every weight so the logits
        # depend on the input.
        leaves, tree = jax.tree.flatten(variables)
        keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
        noise = [0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
        return jax.tree.unflatten(tree, [x + n for x, n in zip(leaves, noise, strict=True)])

    return model, init(jax.random.PRNGKey(0))


def test_cached_sampling_is_exact_and_uses_fewer_calls():
    model, variables = _perturbed_model(time_conditioned=False)

    def run(cache):
        def sample(variables, key):  # the weights are arguments, not compile-time constants
            return masked.ancestral_sample(
                lambda z, t, y: model.apply(variables, z, t, y),
                masked.MaskSchedule(),
                (4, 8),
                MASK,
                64,
                key,
                time_conditioned=False,
                cache=cache,
            )

        return jax.jit(sample)(variables, jax.random.PRNGKey(5))

    uncached, uncached_calls = run(False)
    cached, cached_calls = run(True)
    np.testing.assert_array_equal(cached, uncached)
    assert int(uncached_calls) == 64
    # 32 positions unmask over 64 steps: at most 32 steps change something, so at most 33 calls.
    assert int(cached_calls) <= 33 and int(cached_calls) < int(uncached_calls)
    assert not np.any(np.asarray(cached) == MASK)
    assert np.asarray(cached).min() >= 0 and np.asarray(cached).max() < VOCAB


def test_caching_a_time_conditioned_model_is_refused():
    def model_fn(z, t, y):
        return jnp.zeros((*z.shape, VOCAB + 1))

    with pytest.raises(ValueError, match="time conditioning"):
        masked.ancestral_sample(
            model_fn,
            masked.MaskSchedule(),
            (4, 8),
            MASK,
            8,
            jax.random.PRNGKey(0),
            time_conditioned=True,
            cache=True,
        )


@pytest.mark.parametrize("kind", masked.SCHEDULES)
def test_sampler_draws_each_position_from_the_denoiser(kind):
    """With a denoiser that predicts a fixed p whatever z_t, every final token is a draw from p
    (the unmasking probabilities of the steps add up to one), and no mask survives."""
    p = np.array([0.5, 0.25, 0.15, 0.1, 0.0])
    logits = jnp.log(jnp.asarray(np.append(p, 0.1), jnp.float32))  # mask logit is ignored

    def model_fn(z, t, y):
        return jnp.broadcast_to(logits, (*z.shape, VOCAB + 1))

    tokens, _ = masked.ancestral_sample(
        model_fn, masked.MaskSchedule(kind), (500, 8), MASK, 10, jax.random.PRNGKey(0)
    )
    frequencies = np.bincount(np.asarray(tokens).ravel(), minlength=VOCAB + 1) / tokens.size
    np.testing.assert_allclose(frequencies[:VOCAB], p, atol=0.02)
    assert frequencies[MASK] == 0.0


def test_confidence_order_reveals_the_most_confident_positions_on_schedule():
    """Position j of a sequence has one token of probability q_j (the rest spread evenly);
    the confidence sampler at a low temperature must reveal, per step, exactly the number of
    positions the forward process unmasks, in order of q_j, and draw their likely token."""
    num_positions, steps = 6, 3
    q = np.array([0.3, 0.9, 0.5, 0.99, 0.4, 0.7])  # confidence order: 3, 1, 5, 2, 4, 0
    probs = np.full((num_positions, VOCAB), 0.0)
    for j, qj in enumerate(q):
        probs[j] = (1 - qj) / (VOCAB - 1)
        probs[j, j % VOCAB] = qj
    logits = jnp.log(jnp.asarray(np.concatenate([probs, np.ones((num_positions, 1))], -1)))
    seen = []

    def model_fn(z, t, y):
        jax.debug.callback(lambda z: seen.append(np.asarray(z)), z)
        return jnp.broadcast_to(logits, (*z.shape, VOCAB + 1)).astype(jnp.float32)

    tokens, calls = masked.ancestral_sample(
        model_fn,
        masked.MaskSchedule(),
        (2, num_positions),
        MASK,
        steps,
        jax.random.PRNGKey(0),
        time_conditioned=False,
        temperature=0.01,
        order="confidence",
    )
    # Log-linear schedule, eps=1e-3: after step i, round(6 (1 - alpha_s) / (1 - alpha_1)) =
    # 4, 2, 0 positions stay masked, so 2 are revealed per step, the most confident first.
    revealed = [np.flatnonzero(z[0] != MASK) for z in seen] + [np.arange(num_positions)]
    assert [sorted(r.tolist()) for r in revealed] == [[], [1, 3], [1, 2, 3, 5], list(range(6))]
    np.testing.assert_array_equal(np.asarray(tokens), np.tile(np.arange(6) % VOCAB, (2, 1)))
    assert int(calls) == steps
    with pytest.raises(ValueError, match="order='left' is not one of"):
        masked.ancestral_sample(
            model_fn, masked.MaskSchedule(), (1, 4), MASK, 2, jax.random.PRNGKey(0), order="left"
        )


@pytest.mark.parametrize(
    "shape, time_conditioned",
    [((2, 3, 4), False), pytest.param((2, 6), True, marks=pytest.mark.slow)],
)
def test_token_dit_any_rank_bidirectional_and_time_flag(shape, time_conditioned):
    model, variables = _perturbed_model(time_conditioned, shape)
    z = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB + 1, shape))
    flat = z.reshape(2, -1)
    changed = flat.at[:, -1].set((flat[:, -1] + 1) % VOCAB).reshape(shape)

    @jax.jit
    def outputs(variables):
        return (
            model.apply(variables, z, jnp.zeros(2)),
            model.apply(variables, changed, jnp.zeros(2)),  # last token changed
            model.apply(variables, z, jnp.full(2, 0.7)),  # another time
        )

    raw = outputs(variables)
    assert raw[0].shape == (*shape, VOCAB + 1)
    logits, other, later = (np.asarray(o).reshape(2, -1, VOCAB + 1) for o in raw)
    # No causal mask: changing the last token changes the first position's logits.
    assert not np.allclose(logits[:, 0], other[:, 0])
    assert "blocks_0" in variables["params"]
    if time_conditioned:
        assert not np.allclose(logits, later)
    else:  # the output ignores t, and there is no time embedder at all
        np.testing.assert_array_equal(logits, later)
        assert "t_embedder" not in variables["params"]


def test_position_shift_gives_each_position_its_own_time():
    w, shape = 2.0, (5,)
    schedule = masked.MaskSchedule("loglinear", eps=1e-3, position_shift=w)
    place = np.arange(5) / 4
    t = np.array([0.0, 0.3, 0.6, 1.0], np.float32)
    tau = np.clip((1 + w) * t[:, None] - w * (1 - place), 0, 1)  # [4, 5]
    np.testing.assert_allclose(
        schedule.position_alpha(t, shape), 1 - (1 - 1e-3) * tau, rtol=1e-6, atol=1e-7
    )
    np.testing.assert_array_equal(schedule.position_alpha(0.0, shape), 1.0)  # all clean at t=0
    np.testing.assert_allclose(schedule.position_alpha(1.0, shape), 1e-3, rtol=1e-4)  # all masked
    # Log-linear: -d alpha_l / dt / (1 - alpha_l) = (1 + w) / tau_l while 0 < tau_l < 1, else 0.
    t = np.array([0.37, 0.52, 0.81], np.float32)
    tau = (1 + w) * t[:, None] - w * (1 - place)
    inside = (tau > 1e-3) & (tau < 1)
    expected = np.where(inside, (1 + w) / np.where(inside, tau, 1), 0.0)
    assert inside.any() and (~inside).any()
    np.testing.assert_allclose(schedule.position_loss_weight(t, shape), expected, rtol=1e-5)
    # ... which is what finite differences of alpha give.
    h = 1e-3
    derivative = (
        np.asarray(schedule.position_alpha(t + h, shape), np.float64)
        - np.asarray(schedule.position_alpha(t - h, shape))
    ) / (2 * h)
    alpha = np.asarray(schedule.position_alpha(t, shape), np.float64)
    np.testing.assert_allclose(
        expected[inside], -derivative[inside] / (1 - alpha[inside]), rtol=5e-3
    )
    # Without a shift every position has the schedule's own alpha and weight.
    plain = masked.MaskSchedule("cosine")
    np.testing.assert_array_equal(
        plain.position_alpha(t, (2, 3)), np.broadcast_to(plain.alpha(t)[:, None, None], (3, 2, 3))
    )
    with pytest.raises(ValueError, match="position_shift=-1"):
        masked.MaskSchedule(position_shift=-1.0)


@pytest.mark.parametrize("shift", [0.0, 3.0])
def test_nelbo_of_a_context_free_denoiser_is_its_cross_entropy(shift):
    """A denoiser that predicts a fixed p at every position whatever z_t has NELBO
    sum_l integral (-d alpha_l/dt) (-log p(x_l)) dt = (1 - eps) sum_l -log p(x_l) for any
    schedule (less the t_min truncation): the Monte-Carlo mean over times and masks must match."""
    p = np.array([0.4, 0.3, 0.2, 0.1, 0.0])
    logits = jnp.log(jnp.asarray(np.append(p, 1.0), jnp.float32))  # mask logit is ignored
    x = jnp.asarray(np.random.default_rng(0).integers(0, 4, (1, 12)))
    schedule = masked.MaskSchedule("loglinear", eps=1e-3, position_shift=shift)

    @jax.jit
    def estimate(key):
        batch = jnp.tile(x, (4096, 1))
        terms = masked.nelbo(
            lambda z, t, y: jnp.broadcast_to(logits, (*z.shape, VOCAB + 1)),
            batch,
            key,
            schedule,
            MASK,
            t_min=1e-4,
        )
        return jnp.mean(terms["nelbo"])

    mean = np.mean([float(estimate(jax.random.PRNGKey(i))) for i in range(4)])
    exact = (1 - 1e-3) * -np.log(p[np.asarray(x)]).sum()
    np.testing.assert_allclose(mean, exact, rtol=0.02)


def test_large_position_shift_reveals_positions_left_to_right():
    """With w much larger than the step count allows, each step reveals the next position(s):
    the revealed set is always a prefix, with the random and the confidence order alike, and
    the tokens are still draws from the denoiser."""
    p = np.array([0.5, 0.25, 0.15, 0.1, 0.0])
    logits = jnp.log(jnp.asarray(np.append(p, 0.1), jnp.float32))
    for order in masked.ORDERS:
        seen = []

        def model_fn(z, t, y, seen=seen):
            jax.debug.callback(lambda z: seen.append(np.asarray(z)), z)
            return jnp.broadcast_to(logits, (*z.shape, VOCAB + 1)).astype(jnp.float32)

        tokens, _ = masked.ancestral_sample(
            model_fn,
            masked.MaskSchedule(position_shift=50.0),
            (300, 6),
            MASK,
            12,
            jax.random.PRNGKey(0),
            time_conditioned=False,
            order=order,
        )
        revealed = np.stack([z != MASK for z in seen] + [np.asarray(tokens) != MASK])
        # revealed[step, example, position]: once a position is masked, all later ones are.
        assert np.all(revealed[..., 1:] <= revealed[..., :-1]), order
        assert revealed[0].sum() == 0 and revealed[-1].all()
        assert np.any(revealed[6].sum(-1) < 6) and np.any(revealed[6].sum(-1) > 0)
        frequencies = np.bincount(np.asarray(tokens).ravel(), minlength=VOCAB) / tokens.size
        if order == "random":
            np.testing.assert_allclose(frequencies[:VOCAB], p, atol=0.03)
