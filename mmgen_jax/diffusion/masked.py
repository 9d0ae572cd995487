"""Masked (absorbing-state) discrete diffusion in continuous time, as MDLM (Sahoo et al. 2024).

Tokens are integers in [0, V) (text ids, VQ code indices); one extra id, `mask_id` (= V by
convention), is the absorbing state. A schedule gives alpha_t, the probability that a token is
still clean at time t in [0, 1], with alpha_0 = 1 and alpha_1 = eps (almost everything masked):

  q(z_t | x) = alpha_t * onehot(x) + (1 - alpha_t) * onehot(mask)       (each position alone)

SUBS parametrisation (MDLM sec. 3.2.3): the denoiser's logits over V + 1 ids are turned into
log-probabilities with the mask logit at -inf (the mask is never predicted), and positions that
are already unmasked in z_t are carried over (a one-hot of their token). The continuous-time
NELBO per sequence is then a weighted cross-entropy on the masked positions only:

  NELBO(x) = E_{t ~ U[0,1]} [ -alpha'_t / (1 - alpha_t) * sum_{l : z_t^l = mask} -log p(x^l | z_t) ]

Training draws t low-discrepancy ("antithetic"): one uniform u per batch, t_i = (u + i / B) mod 1,
mapped into [t_min, 1] so the weight stays finite. Optionally t is importance-sampled: a
fraction `low_t_fraction` of the times falls in [t_min, low_t_max) (a piecewise-constant density
q), and each estimate is multiplied by uniform(t) / q(t), so the NELBO estimate stays unbiased
while more examples have few masks (all of a statement visible but a token or two: the contexts
in which "the result given the operands" is learned).

Ancestral sampling (MDLM eq. 7) over T steps t_i = i / T: a masked position at time t becomes
token x at time s < t with probability (alpha_s - alpha_t) / (1 - alpha_t) * p(x | z_t) and stays
masked otherwise; unmasked positions never change. The last step ends at s = 0 (alpha_0 = 1), so
no mask survives. When no token of the batch changed in a step, the next model call would see
the same z_t; if the denoiser ignores t (`time_conditioned=False`, MDLM's observation) its output
is the same too and the sampler reuses it (caching: exact, fewer calls). With a time-conditioned
denoiser the output depends on t and caching would change the samples, so it is refused.

Position-dependent schedules (`position_shift` w >= 0): position l of N (raster order) follows
the schedule at its own time tau_l(t) = clip((1 + w) t - w (1 - l / (N - 1)), 0, 1), so later
positions are masked earlier in the forward process and revealed later when sampling. Every
position still runs through its whole schedule (tau_l = 0 at t = 0, 1 at t = 1) and positions
are masked independently, so the NELBO keeps its form with a weight per position,
-d alpha(tau_l) / dt / (1 - alpha(tau_l)) (0 while tau_l is clipped); w = 0 is MDLM and large w
approaches left-to-right generation. The optimal denoiser is the same for every schedule (the
masked tokens' posterior given the visible ones does not depend on t); the schedule changes
which contexts training sees most: with w > 0, "a prefix visible, the rest masked", the
contexts in which a statement's result is predicted from its operands. Positions whose own time
is below t_min get no weight (the truncation MDLM applies to t).

Confidence order (`order='confidence'`; MaskGIT, Chang et al. 2022; LLaDA's "low-confidence
remasking", Nie et al. 2025): every step draws a token for each masked position from p(x | z_t)
as above, then keeps only the most confident draws (highest model probability of the drawn
token, before any temperature) so that round(N (1 - alpha_s) / (1 - alpha_1)) of the N
positions stay masked, the number the forward process leaves at s. The model, not chance,
chooses the order in which positions are filled (e.g. operands before the result they
determine); it is a different sampler, not MDLM's: samples are biased toward the model's
confident choices.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

SCHEDULES = ("loglinear", "cosine")
ORDERS = ("random", "confidence")  # the order in which sampling reveals masked positions
DEFAULT_EPS = 1e-3  # alpha_1 = eps: MDLM's log-linear noise with eps = 1e-3
DEFAULT_T_MIN = 1e-3  # training times lie in [t_min, 1]; the weight ~ 1/t stays bounded

# model_fn(z_t [B, *S] int32, t [B] float32 in [0, 1], y [B] or None) -> logits [B, *S, V + 1]
ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


@dataclasses.dataclass(frozen=True)
class MaskSchedule:
    """alpha_t (probability a token is clean at time t) and its time derivative.

    'loglinear': alpha_t = 1 - (1 - eps) t          (MDLM's default; weight -alpha'/(1-alpha) = 1/t)
    'cosine':    alpha_t = 1 - (1 - eps)(1 - cos(pi t / 2))
    Both have alpha_0 = 1 exactly and alpha_1 = eps.

    `position_shift` w >= 0 gives each position its own time (module docstring); the
    `position_*` methods take the token shape and return per-position values.
    """

    kind: str = "loglinear"
    eps: float = DEFAULT_EPS
    position_shift: float = 0.0

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"mask schedule {self.kind!r} is not one of {', '.join(SCHEDULES)}")
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"mask schedule eps={self.eps} must be in [0, 1)")
        if not (math.isfinite(self.position_shift) and self.position_shift >= 0.0):
            raise ValueError(f"mask schedule position_shift={self.position_shift} must be >= 0")

    def alpha(self, t: jax.Array) -> jax.Array:
        t = jnp.asarray(t, jnp.float32)
        if self.kind == "loglinear":
            return 1.0 - (1.0 - self.eps) * t
        return 1.0 - (1.0 - self.eps) * (1.0 - jnp.cos(0.5 * math.pi * t))

    def alpha_derivative(self, t: jax.Array) -> jax.Array:
        """d alpha_t / dt (negative)."""
        t = jnp.asarray(t, jnp.float32)
        if self.kind == "loglinear":
            return jnp.full_like(t, -(1.0 - self.eps))
        return -(1.0 - self.eps) * 0.5 * math.pi * jnp.sin(0.5 * math.pi * t)

    def loss_weight(self, t: jax.Array) -> jax.Array:
        """-alpha'_t / (1 - alpha_t), the NELBO weight of a masked position's cross-entropy."""
        return -self.alpha_derivative(t) / (1.0 - self.alpha(t))

    def position_times(self, t: jax.Array, token_shape: tuple[int, ...]) -> jax.Array:
        """Each position's own time before clipping, (1 + w) t - w (1 - l / (N - 1)):
        [*t.shape, *token_shape] for times t of any shape (t itself when w = 0)."""
        t = jnp.asarray(t, jnp.float32)
        t = t.reshape(t.shape + (1,) * len(token_shape))
        if self.position_shift == 0.0:
            return jnp.broadcast_to(t, t.shape[: t.ndim - len(token_shape)] + tuple(token_shape))
        count = math.prod(token_shape)
        place = jnp.arange(count, dtype=jnp.float32).reshape(token_shape) / max(count - 1, 1)
        w = self.position_shift
        return (1.0 + w) * t - w * (1.0 - place)

    def position_alpha(self, t: jax.Array, token_shape: tuple[int, ...]) -> jax.Array:
        """alpha of each position at time t: [*t.shape, *token_shape]."""
        return self.alpha(jnp.clip(self.position_times(t, token_shape), 0.0, 1.0))

    def position_loss_weight(
        self, t: jax.Array, token_shape: tuple[int, ...], t_min: float = DEFAULT_T_MIN
    ) -> jax.Array:
        """-d alpha_l / dt / (1 - alpha_l) per position [*t.shape, *token_shape]: (1 + w) times
        `loss_weight` at the position's time while that lies in [t_min, 1], else 0."""
        tau = self.position_times(t, token_shape)
        active = (tau >= t_min) & (tau <= 1.0)
        weight = (1.0 + self.position_shift) * self.loss_weight(jnp.clip(tau, t_min, 1.0))
        return jnp.where(active, weight, 0.0)


def check_time_proposal(
    t_min: float, low_t_max: float | None, low_t_fraction: float | None
) -> None:
    """Clear errors for an importance-sampling proposal `sample_times` cannot draw from."""
    if (low_t_max is None) != (low_t_fraction is None):
        raise ValueError("low_t_max and low_t_fraction go together (both set or both None)")
    if low_t_max is not None and not (t_min < low_t_max < 1.0 and 0.0 < low_t_fraction < 1.0):
        raise ValueError(
            f"low_t_max={low_t_max} must be in (t_min={t_min}, 1) and "
            f"low_t_fraction={low_t_fraction} in (0, 1)"
        )


def sample_times(
    rng: jax.Array,
    batch_size: int,
    t_min: float = DEFAULT_T_MIN,
    antithetic: bool = True,
    low_t_max: float | None = None,
    low_t_fraction: float | None = None,
) -> jax.Array:
    """Training times [B] in [t_min, 1]: low-discrepancy (u + i/B) mod 1, or i.i.d. uniform,
    mapped through the inverse CDF of the proposal: uniform on [t_min, 1], or with
    `low_t_fraction` of the mass spread evenly on [t_min, low_t_max) and the rest on
    [low_t_max, 1] (weights: `time_importance_weights`)."""
    check_time_proposal(t_min, low_t_max, low_t_fraction)
    if antithetic:
        u = jax.random.uniform(rng, ())
        u = jnp.mod(u + jnp.arange(batch_size, dtype=jnp.float32) / batch_size, 1.0)
    else:
        u = jax.random.uniform(rng, (batch_size,))
    if low_t_max is None:
        return t_min + (1.0 - t_min) * u
    low = t_min + u / low_t_fraction * (low_t_max - t_min)
    high = low_t_max + (u - low_t_fraction) / (1.0 - low_t_fraction) * (1.0 - low_t_max)
    return jnp.where(u < low_t_fraction, low, high)


def time_importance_weights(
    t: jax.Array,
    t_min: float = DEFAULT_T_MIN,
    low_t_max: float | None = None,
    low_t_fraction: float | None = None,
) -> jax.Array:
    """uniform(t) / q(t) [B] for times drawn by `sample_times` with the same arguments: 1 for
    the uniform proposal; otherwise (low_t_max - t_min) / ((1 - t_min) f) below low_t_max and
    (1 - low_t_max) / ((1 - t_min)(1 - f)) above, with f = low_t_fraction."""
    check_time_proposal(t_min, low_t_max, low_t_fraction)
    t = jnp.asarray(t, jnp.float32)
    if low_t_max is None:
        return jnp.ones_like(t)
    low = (low_t_max - t_min) / (1.0 - t_min) / low_t_fraction
    high = (1.0 - low_t_max) / (1.0 - t_min) / (1.0 - low_t_fraction)
    return jnp.where(t < low_t_max, low, high)


def q_sample(
    x: jax.Array, t: jax.Array, schedule: MaskSchedule, mask_id: int, rng: jax.Array
) -> jax.Array:
    """Forward masking: each position of x [B, *S] is replaced by `mask_id` with probability
    1 - alpha_t (t [B]); drawn at the full batch shape."""
    u = jax.random.uniform(rng, x.shape)  # [B, *S]
    return mask_with_uniforms(x, t, schedule, mask_id, u)


def mask_with_uniforms(
    x: jax.Array, t: jax.Array, schedule: MaskSchedule, mask_id: int, u: jax.Array
) -> jax.Array:
    """`q_sample` with given uniforms u [B, *S]: masked where u < 1 - alpha (per position)."""
    move = 1.0 - schedule.position_alpha(t, x.shape[1:])  # [B, *S]
    return jnp.where(u < move, jnp.asarray(mask_id, x.dtype), x)


def subs_log_probs(logits: jax.Array, z_t: jax.Array, mask_id: int) -> jax.Array:
    """SUBS parametrisation: logits [B, *S, V + 1] -> log p(x | z_t) [B, *S, V + 1], float32.

    The mask id gets probability 0 (logit -inf); where z_t is not masked the distribution is a
    one-hot of z_t (log-probability 0 there, -inf elsewhere).
    """
    num_ids = logits.shape[-1]
    if mask_id >= num_ids:
        raise ValueError(f"mask_id={mask_id} is outside the {num_ids} logits")
    ids = jnp.arange(num_ids)
    logits = jnp.where(ids == mask_id, -jnp.inf, logits.astype(jnp.float32))
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    carried = jnp.where(ids == z_t[..., None], 0.0, -jnp.inf)  # one-hot of z_t, in log space
    return jnp.where((z_t == mask_id)[..., None], log_probs, carried)


def nelbo_terms(
    log_probs: jax.Array,
    x: jax.Array,
    z_t: jax.Array,
    t: jax.Array,
    schedule: MaskSchedule,
    mask_id: int,
    t_min: float = DEFAULT_T_MIN,
) -> jax.Array:
    """Per-sequence NELBO estimate in nats [B] from SUBS log-probs [B, *S, V + 1].

    Sum over masked positions of weight_l(t) * -log p(x_l | z_t) (weight(t) for every position
    when the schedule has no position shift); unmasked positions add nothing.
    """
    target = jnp.take_along_axis(log_probs, x[..., None].astype(jnp.int32), axis=-1)[..., 0]
    masked = z_t == mask_id
    weight = schedule.position_loss_weight(t, x.shape[1:], t_min)  # [B, *S]
    cross_entropy = jnp.where(masked, weight * -target, 0.0)  # [B, *S]; where() keeps -inf out
    return cross_entropy.reshape(x.shape[0], -1).sum(axis=-1)  # [B]


def nelbo(
    model_fn: ModelFn,
    x: jax.Array,
    rng: jax.Array,
    schedule: MaskSchedule,
    mask_id: int,
    y: Any = None,
    *,
    t_min: float = DEFAULT_T_MIN,
    antithetic: bool = True,
    low_t_max: float | None = None,
    low_t_fraction: float | None = None,
) -> dict[str, jax.Array]:
    """One-sample NELBO of token arrays x [B, *S]: `{'nelbo': [B] nats per sequence,
    'proposal_weighted': [B], 'masked_fraction': [B]}`; the model sees z_t, t and y.

    With `low_t_max`/`low_t_fraction` the times are importance-sampled (`sample_times`) and
    'nelbo' is reweighted by uniform(t) / q(t), unbiased; 'proposal_weighted' is the same
    without that factor: a loss that puts the proposal's emphasis on small t (not a bound).
    With the uniform proposal the two are equal."""
    t_rng, mask_rng = jax.random.split(rng)
    t = sample_times(t_rng, x.shape[0], t_min, antithetic, low_t_max, low_t_fraction)
    z_t = q_sample(x, t, schedule, mask_id, mask_rng)
    log_probs = subs_log_probs(model_fn(z_t, t, y), z_t, mask_id)
    masked = (z_t == mask_id).reshape(x.shape[0], -1)
    terms = nelbo_terms(log_probs, x, z_t, t, schedule, mask_id, t_min)
    return {
        "nelbo": terms * time_importance_weights(t, t_min, low_t_max, low_t_fraction),
        "proposal_weighted": terms,
        "masked_fraction": masked.mean(axis=-1, dtype=jnp.float32),
    }


def guided_log_probs(
    model_fn: ModelFn,
    z_t: jax.Array,
    t: jax.Array,
    mask_id: int,
    y: Any = None,
    cfg_scale: float = 1.0,
    null_label: Any = None,
) -> jax.Array:
    """SUBS log-probs [B, *S, V + 1] of the denoiser, with classifier-free guidance when
    cfg_scale != 1: log p = log_softmax(u + s (c - u)) of the conditional / unconditional
    SUBS log-probs c, u (the batch is run twice, with y and with `null_label`)."""
    if cfg_scale == 1.0:
        return subs_log_probs(model_fn(z_t, t, y), z_t, mask_id)
    if y is None or null_label is None:
        raise ValueError("classifier-free guidance (cfg_scale != 1) needs y and null_label")
    y = jnp.asarray(y)
    null = jnp.broadcast_to(jnp.asarray(null_label, y.dtype), y.shape)
    logits = model_fn(
        jnp.concatenate([z_t, z_t]), jnp.concatenate([t, t]), jnp.concatenate([y, null])
    )
    both = subs_log_probs(logits, jnp.concatenate([z_t, z_t]), mask_id)
    cond, uncond = jnp.split(both, 2)
    # Masked positions: guide the finite log-probs; the mask id stays at -inf. Unmasked
    # positions are one-hots in both halves and stay so.
    finite = jnp.isfinite(cond) & jnp.isfinite(uncond)
    guided = jnp.where(finite, uncond + cfg_scale * (cond - uncond), -jnp.inf)
    return jax.nn.log_softmax(guided, axis=-1)


def ancestral_sample(
    model_fn: ModelFn,
    schedule: MaskSchedule,
    shape: tuple[int, ...],
    mask_id: int,
    num_steps: int,
    rng: jax.Array,
    *,
    y: Any = None,
    cfg_scale: float = 1.0,
    null_label: Any = None,
    time_conditioned: bool = True,
    cache: bool = False,
    temperature: float = 1.0,
    order: str = "random",
) -> tuple[jax.Array, jax.Array]:
    """MDLM ancestral sampling from all-mask over `num_steps` steps (one `lax.scan`).

    `order='random'` is MDLM's sampler (each masked position is revealed independently);
    `order='confidence'` reveals the most confident draws first (module docstring).

    Returns (tokens [*shape] int32 without any mask id, number of denoiser calls (int32)).

    `cache=True` reuses the last denoiser output when no token of the batch changed since it
    was computed; this is exact only for a denoiser that ignores t, so it raises for
    `time_conditioned=True`. Cached and uncached sampling with the same `rng` give the same
    tokens. `temperature` divides the log-probs of the token choice (1 = the model's
    distribution). Step i draws from `fold_in(rng, i)` at the full batch shape.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be >= 1")
    if cache and time_conditioned:
        raise ValueError(
            "caching denoiser outputs is exact only for a denoiser without time conditioning; "
            "the model is time-conditioned (model.time_conditioned=True), so use cache=False"
        )
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    if order not in ORDERS:
        raise ValueError(f"order={order!r} is not one of {ORDERS}")
    batch = shape[0]
    z = jnp.full(shape, mask_id, jnp.int32)

    def denoise(z_t, t_now):
        t = jnp.full((batch,), t_now, jnp.float32)
        return guided_log_probs(model_fn, z_t, t, mask_id, y, cfg_scale, null_label)

    log_probs_shape = jax.eval_shape(denoise, z, jnp.float32(1.0))

    def step(carry, index):
        z_t, cached, stale, calls = carry
        t_now = (num_steps - index) / num_steps  # 1, ..., 1/T
        s_next = (num_steps - index - 1) / num_steps  # ..., 0
        must_call = stale | jnp.asarray(not cache)
        log_probs = jax.lax.cond(must_call, denoise, lambda z_, t_: cached, z_t, t_now)
        calls = calls + must_call.astype(jnp.int32)
        alpha_t = schedule.position_alpha(t_now, shape[1:])  # [*S]
        alpha_s = schedule.position_alpha(s_next, shape[1:])  # [*S]
        tokens = jax.nn.log_softmax(log_probs / temperature, axis=-1)  # mask id stays at -inf
        key = jax.random.fold_in(rng, index)
        if order == "random":
            # log P(leave the mask) and log P(stay masked) per position (-inf at s = 0); a
            # position with alpha_t = 1 is clean already and its value is never used.
            moving = alpha_t < 1.0
            unmask = jnp.where(moving, jnp.log(alpha_s - alpha_t) - jnp.log1p(-alpha_t), 0.0)
            stay = jnp.where(moving, jnp.log1p(-alpha_s) - jnp.log1p(-alpha_t), -jnp.inf)
            ids = jnp.arange(log_probs.shape[-1])
            choice = jnp.where(ids == mask_id, stay[..., None], unmask[..., None] + tokens)
            draw = jax.random.categorical(key, choice, axis=-1)
            z_next = jnp.where(z_t == mask_id, draw.astype(jnp.int32), z_t)
        else:
            draw = jax.random.categorical(key, tokens, axis=-1).astype(jnp.int32)
            confidence = jnp.take_along_axis(log_probs, draw[..., None], axis=-1)[..., 0]
            # Positions the schedule has fully revealed by s go first; positions it cannot
            # have revealed yet (alpha_s = alpha_1) stay masked.
            alpha_1 = schedule.alpha(jnp.float32(1.0))
            confidence = jnp.where(alpha_s >= 1.0, jnp.inf, confidence)
            confidence = jnp.where(alpha_s <= alpha_1, _LAST, confidence)
            reveal = _most_confident(
                confidence,
                z_t == mask_id,
                keep_masked=jnp.round(jnp.sum(1.0 - alpha_s) / (1.0 - alpha_1)).astype(jnp.int32),
            )
            z_next = jnp.where(reveal, draw, z_t)
        changed = jnp.any(z_next != z_t)
        return (z_next, log_probs, changed, calls), None

    init = (
        z,
        jnp.zeros(log_probs_shape.shape, log_probs_shape.dtype),
        jnp.asarray(True),
        jnp.int32(0),
    )
    (z, _, _, calls), _ = jax.lax.scan(step, init, jnp.arange(num_steps))
    return z, calls


_LAST = -1e30  # a confidence below any real one, above that of unmasked positions (-inf)


def _most_confident(confidence: jax.Array, masked: jax.Array, keep_masked: jax.Array) -> jax.Array:
    """[B, *S] bool: per example, the masked positions to reveal so that `keep_masked` stay
    masked, the ones with the highest `confidence` first (ties: the lower position)."""
    flat_conf = jnp.where(masked, confidence, -jnp.inf).reshape(masked.shape[0], -1)
    flat_masked = masked.reshape(masked.shape[0], -1)
    reveal_count = jnp.maximum(jnp.sum(flat_masked, axis=-1) - keep_masked, 0)  # [B]
    rank = jnp.argsort(jnp.argsort(-flat_conf, axis=-1, stable=True), axis=-1, stable=True)
    reveal = flat_masked & (rank < reveal_count[:, None])
    return reveal.reshape(masked.shape)
