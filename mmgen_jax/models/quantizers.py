"""Quantizers that map continuous encoder outputs to a discrete codebook.

All quantizers share one interface: `quantizer(z, train=...)` takes channels-last features
`[B, *S, D]` of any spatial rank and returns a `QuantizerOutput` with the straight-through
quantized features (same shape as `z`), integer code indices `[B, *S]`, a scalar auxiliary loss
and a dict of scalar statistics. `indices_to_codes(indices)` inverts the index map, so a model can
decode from stored indices.

* `VectorQuantizer` (van den Oord et al. 2017): nearest code by L2 distance in fp32, codebook loss
  + beta * commitment loss, optional EMA codebook (Razavi et al. 2019), dead-code restart
  (Dhariwal et al. 2020), cosine codes and a low-dimensional code space (Yu et al. 2022).
* `FSQ` (Mentzer et al. 2023): finite scalar quantization with a fixed implicit codebook.
* `ResidualVQ` (Zeghidour et al. 2021): `VectorQuantizer` stages on the residual with quantizer
  dropout; its indices carry a trailing stage axis `[B, *S, num_stages]`.

Cross-device reduction: the quantizers are written for the *global* batch inside `jax.jit`. Sums
over the batch (EMA statistics, usage counts) are therefore global sums; under a sharded batch
XLA inserts the all-reduce itself, so replicas can never drift apart and no explicit collective
(which could deadlock if one replica skipped it) appears here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

# Name of the mutable variable collection that holds non-gradient quantizer state.
STATE_COLLECTION = "vq_state"
# RNG stream used to pick replacement vectors for dead codes.
RNG_STREAM = "quantizer"


class QuantizerOutput(NamedTuple):
    """What every quantizer returns."""

    z_q: jnp.ndarray  # [B, *S, D] quantized features with straight-through gradients
    indices: jnp.ndarray  # [B, *S] int32 code indices
    loss: jnp.ndarray  # [] auxiliary loss to add to the training objective
    stats: dict[str, jnp.ndarray]  # scalar diagnostics


def l2_normalize(x: jnp.ndarray, axis: int = -1, eps: float = 1e-6) -> jnp.ndarray:
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + eps)


def squared_distances(z: jnp.ndarray, codebook: jnp.ndarray) -> jnp.ndarray:
    """Squared L2 distances in fp32: z [N, d], codebook [K, d] -> [N, K].

    Always fp32 at highest matmul precision: bf16 distances pick wrong codes.
    """
    z = z.astype(jnp.float32)
    codebook = codebook.astype(jnp.float32)
    cross = jnp.matmul(z, codebook.T, precision=jax.lax.Precision.HIGHEST)
    return (
        jnp.sum(z * z, axis=-1, keepdims=True) - 2.0 * cross + jnp.sum(codebook**2, axis=-1)[None]
    )


def _perplexity(counts: jnp.ndarray) -> jnp.ndarray:
    probs = counts / jnp.maximum(jnp.sum(counts), 1.0)
    return jnp.exp(-jnp.sum(jnp.where(probs > 0, probs * jnp.log(probs), 0.0)))


def _usage_stats(indices: jnp.ndarray, num_codes: int) -> dict[str, jnp.ndarray]:
    counts = jnp.zeros((num_codes,), jnp.float32).at[indices.reshape(-1)].add(1.0)
    return {
        "batch_perplexity": _perplexity(counts),
        "batch_usage": jnp.mean((counts > 0).astype(jnp.float32)),
    }


class VectorQuantizer(nn.Module):
    """Vector quantizer with straight-through gradients.

    Attributes:
      num_codes: codebook size K.
      code_dim: dimension of the code space. When it differs from the input channel count, the
        input is projected down to it before the lookup and the code projected back up after it
        (a low-dimensional code space improves codebook usage).
      beta: weight of the commitment loss ||z - sg(q)||^2, the encoder-side term. The codebook
        term ||sg(z) - q||^2 has weight 1 (and is dropped with an EMA codebook).
      use_ema: update the codebook by exponential moving averages of the assigned encoder
        outputs instead of by gradients. The codebook then lives in the `vq_state` collection.
      ema_decay, ema_epsilon: EMA decay and the Laplace smoothing constant of the code counts.
      cosine: l2-normalise encoder outputs and codes (distances become cosine distances).
      input_dim: channel count of the inputs; when set and different from `code_dim`, inputs
        are projected to the code space and codes back (None means inputs have `code_dim`).
      restart_after_steps: codes unused by any example for this many consecutive training steps
        are re-seeded from random encoder outputs of the current batch (0 disables restarts).
        With a gradient codebook the new rows are written into the params by
        `apply_codebook_restarts` after the optimizer step.
    """

    num_codes: int
    code_dim: int
    beta: float = 0.25
    use_ema: bool = False
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    cosine: bool = False
    restart_after_steps: int = 0
    input_dim: int | None = None
    dtype: Any = jnp.float32

    def _codebook_init(self, rng: jax.Array, shape: tuple[int, int]) -> jnp.ndarray:
        codes = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")(rng, shape)
        return l2_normalize(codes) if self.cosine else codes

    def setup(self):
        shape = (self.num_codes, self.code_dim)
        if self.input_dim is not None and self.input_dim != self.code_dim:
            self.in_proj = nn.Dense(self.code_dim, dtype=self.dtype)
            self.out_proj = nn.Dense(self.input_dim, dtype=self.dtype)
        if self.use_ema:
            self.codebook_var = self.variable(
                STATE_COLLECTION,
                "codebook",
                lambda: self._codebook_init(self.make_rng("params"), shape),
            )
            self.cluster_size = self.variable(
                STATE_COLLECTION, "cluster_size", lambda: jnp.zeros((self.num_codes,))
            )
            # Sonnet/Jukebox convention: the running sum starts at the initial codebook.
            self.embed_sum = self.variable(
                STATE_COLLECTION, "embed_sum", lambda: self.codebook_var.value
            )
        else:
            self.codebook_param = self.param("codebook", self._codebook_init, shape)
        if self.restart_after_steps > 0:
            self.steps_since_used = self.variable(
                STATE_COLLECTION,
                "steps_since_used",
                lambda: jnp.zeros((self.num_codes,), jnp.int32),
            )
            if not self.use_ema:
                self.restart_mask = self.variable(
                    STATE_COLLECTION, "restart_mask", lambda: jnp.zeros((self.num_codes,), bool)
                )
                self.restart_vectors = self.variable(
                    STATE_COLLECTION, "restart_vectors", lambda: jnp.zeros(shape)
                )

    @property
    def codebook(self) -> jnp.ndarray:
        """The codebook [K, code_dim] as used for lookups (normalised if cosine)."""
        codes = self.codebook_var.value if self.use_ema else self.codebook_param
        return l2_normalize(codes) if self.cosine else codes

    @property
    def _projected(self) -> bool:
        return self.input_dim is not None and self.input_dim != self.code_dim

    def __call__(self, z: jnp.ndarray, *, train: bool = False) -> QuantizerOutput:
        expected = self.input_dim if self.input_dim is not None else self.code_dim
        if z.shape[-1] != expected:
            raise ValueError(f"VectorQuantizer expects {expected} channels, got shape {z.shape}")
        if self._projected:
            z = self.in_proj(z)
        z = z.astype(jnp.float32)  # [B, *S, d]
        if self.cosine:
            z = l2_normalize(z)
        flat = z.reshape(-1, self.code_dim)  # [N, d]
        codebook = self.codebook
        indices = jnp.argmin(squared_distances(flat, codebook), axis=-1).astype(jnp.int32)
        quantized = jnp.take(codebook, indices, axis=0).reshape(z.shape)

        commitment = jnp.mean((z - jax.lax.stop_gradient(quantized)) ** 2)
        codebook_loss = (
            jnp.zeros(()) if self.use_ema else jnp.mean((jax.lax.stop_gradient(z) - quantized) ** 2)
        )
        loss = codebook_loss + self.beta * commitment
        z_q = z + jax.lax.stop_gradient(quantized - z)  # straight-through estimator

        if train and not self.is_initializing():
            self._update_state(flat, indices)

        z_q = self.project_codes(z_q)
        stats = {"codebook_loss": codebook_loss, "commitment_loss": commitment}
        stats.update(_usage_stats(indices, self.num_codes))
        return QuantizerOutput(z_q, indices.reshape(z.shape[:-1]), loss, stats)

    def indices_to_codes(self, indices: jnp.ndarray) -> jnp.ndarray:
        """Integer indices [B, *S] -> code vectors [B, *S, input_dim] (after the out projection)."""
        return self.project_codes(jnp.take(self.codebook, indices, axis=0))

    def project_codes(self, vectors: jnp.ndarray) -> jnp.ndarray:
        """Code-space vectors [B, *S, code_dim] -> decoder input [B, *S, input_dim], as they are
        (the output projection alone; no snapping to the codebook)."""
        return self.out_proj(vectors) if self._projected else vectors

    def code_vectors(self, indices: jnp.ndarray) -> jnp.ndarray:
        """Integer indices [B, *S] -> codebook vectors [B, *S, code_dim] in the code space."""
        return jnp.take(self.codebook, indices, axis=0)

    def nearest_indices(self, vectors: jnp.ndarray) -> jnp.ndarray:
        """Code-space vectors [B, *S, code_dim] -> index of the nearest code [B, *S]."""
        flat = vectors.reshape(-1, self.code_dim).astype(jnp.float32)
        if self.cosine:
            flat = l2_normalize(flat)
        indices = jnp.argmin(squared_distances(flat, self.codebook), axis=-1)
        return indices.astype(jnp.int32).reshape(vectors.shape[:-1])

    def _update_state(self, flat: jnp.ndarray, indices: jnp.ndarray) -> None:
        """EMA codebook update and dead-code bookkeeping from one (global) training batch."""
        flat = jax.lax.stop_gradient(flat)
        counts = jnp.zeros((self.num_codes,), jnp.float32).at[indices].add(1.0)  # [K]
        if self.use_ema:
            sums = jnp.zeros((self.num_codes, self.code_dim)).at[indices].add(flat)  # [K, d]
            decay = self.ema_decay
            cluster_size = decay * self.cluster_size.value + (1 - decay) * counts
            embed_sum = decay * self.embed_sum.value + (1 - decay) * sums
            total = jnp.sum(cluster_size)
            smoothed = (cluster_size + self.ema_epsilon) / (
                total + self.num_codes * self.ema_epsilon
            )
            smoothed = smoothed * total
            self.cluster_size.value = cluster_size
            self.embed_sum.value = embed_sum
            self.codebook_var.value = embed_sum / smoothed[:, None]
        if self.restart_after_steps > 0:
            self._restart_dead_codes(flat, counts)

    def _restart_dead_codes(self, flat: jnp.ndarray, counts: jnp.ndarray) -> None:
        steps = jnp.where(counts > 0, 0, self.steps_since_used.value + 1)
        dead = steps >= self.restart_after_steps  # [K]
        picks = jax.random.randint(self.make_rng(RNG_STREAM), (self.num_codes,), 0, flat.shape[0])
        replacement = jnp.take(flat, picks, axis=0)  # [K, d]
        if self.cosine:
            replacement = l2_normalize(replacement)
        self.steps_since_used.value = jnp.where(dead, 0, steps)
        if self.use_ema:
            # As in Jukebox: a restarted code starts with count 1 and sum = its new vector.
            self.cluster_size.value = jnp.where(dead, 1.0, self.cluster_size.value)
            self.embed_sum.value = jnp.where(dead[:, None], replacement, self.embed_sum.value)
            self.codebook_var.value = jnp.where(dead[:, None], replacement, self.codebook_var.value)
        else:
            self.restart_mask.value = dead
            self.restart_vectors.value = replacement


def apply_codebook_restarts(params: Any, model_state: Any) -> Any:
    """Write pending dead-code restarts of gradient-trained codebooks into `params`.

    A gradient codebook is a parameter, which a module cannot overwrite during `apply`; the
    quantizer instead records `restart_mask` [K] and `restart_vectors` [K, d] in its state and the
    train step calls this after the optimizer update. Module paths in params and state mirror
    each other, so the codebook sits at the same path as the mask.
    """
    state = model_state.get(STATE_COLLECTION) if hasattr(model_state, "get") else None
    if not state:
        return params
    flat_state = traverse_util.flatten_dict(state)
    flat_params = traverse_util.flatten_dict(params)
    for path, mask in flat_state.items():
        if path[-1] != "restart_mask":
            continue
        key = path[:-1] + ("codebook",)
        vectors = flat_state[path[:-1] + ("restart_vectors",)]
        flat_params[key] = jnp.where(mask[:, None], vectors, flat_params[key])
    return traverse_util.unflatten_dict(flat_params)


class FSQ(nn.Module):
    """Finite scalar quantization (Mentzer et al. 2023).

    Each of the `len(levels)` channels is bounded with tanh and rounded to one of `levels[i]`
    values in [-1, 1]; the implicit codebook has prod(levels) entries and needs no loss, EMA or
    restarts. With `input_dim` set (and different from `len(levels)`), inputs are projected to
    `len(levels)` channels and codes projected back.
    """

    levels: Sequence[int]
    input_dim: int | None = None
    dtype: Any = jnp.float32

    def setup(self):
        if self._projected:
            self.in_proj = nn.Dense(len(self.levels), dtype=self.dtype)
            self.out_proj = nn.Dense(self.input_dim, dtype=self.dtype)

    @property
    def _projected(self) -> bool:
        return self.input_dim is not None and self.input_dim != len(self.levels)

    @property
    def num_codes(self) -> int:
        return int(np.prod(self.levels))

    def _levels(self) -> jnp.ndarray:
        return jnp.asarray(self.levels, jnp.float32)

    def _basis(self) -> jnp.ndarray:
        return jnp.asarray(np.concatenate([[1], np.cumprod(self.levels[:-1])]), jnp.int32)

    def bound(self, z: jnp.ndarray) -> jnp.ndarray:
        """Squash channel i to an interval whose rounding gives exactly levels[i] integers.

        Even level counts use a half-step offset. The shift is `tan(offset / half_l)` exactly as
        in the paper's reference code (appendix A.1); `arctanh` would centre slightly better
        but is undefined for a level count of 2.
        """
        eps = 1e-3
        levels = self._levels()
        half_l = (levels - 1) * (1 - eps) / 2
        offset = jnp.where(levels % 2 == 1, 0.0, 0.5)
        shift = jnp.tan(offset / half_l)
        return jnp.tanh(z + shift) * half_l - offset

    def quantize(self, z: jnp.ndarray) -> jnp.ndarray:
        """Round with a straight-through gradient; outputs lie on the grid in [-1, 1]."""
        bounded = self.bound(z)
        rounded = bounded + jax.lax.stop_gradient(jnp.round(bounded) - bounded)
        return rounded / (self._levels() // 2)

    def codes_to_indices(self, codes: jnp.ndarray) -> jnp.ndarray:
        """Grid codes [..., len(levels)] -> mixed-radix integer indices [...]."""
        half_width = self._levels() // 2
        digits = jnp.round(codes * half_width + half_width).astype(jnp.int32)
        return jnp.sum(digits * self._basis(), axis=-1)

    def indices_to_grid(self, indices: jnp.ndarray) -> jnp.ndarray:
        """Integer indices [...] -> grid codes [..., len(levels)] in [-1, 1]."""
        levels = jnp.asarray(self.levels, jnp.int32)
        digits = (indices[..., None] // self._basis()) % levels
        half_width = self._levels() // 2
        return (digits.astype(jnp.float32) - half_width) / half_width

    def __call__(self, z: jnp.ndarray, *, train: bool = False) -> QuantizerOutput:
        del train  # FSQ has no training-time state.
        expected = self.input_dim if self.input_dim is not None else len(self.levels)
        if z.shape[-1] != expected:
            raise ValueError(f"FSQ expects {expected} channels, got shape {z.shape}")
        if self._projected:
            z = self.in_proj(z)
        codes = self.quantize(z.astype(jnp.float32))
        indices = self.codes_to_indices(codes)
        stats = _usage_stats(indices, self.num_codes)
        z_q = self.project_codes(codes)
        return QuantizerOutput(z_q, indices, jnp.zeros(()), stats)

    def indices_to_codes(self, indices: jnp.ndarray) -> jnp.ndarray:
        """Integer indices [B, *S] -> code vectors [B, *S, input_dim]."""
        return self.project_codes(self.indices_to_grid(indices))

    def project_codes(self, vectors: jnp.ndarray) -> jnp.ndarray:
        """Points [B, *S, len(levels)] -> decoder input [B, *S, input_dim], as they are (no
        rounding to the grid)."""
        return self.out_proj(vectors) if self._projected else vectors

    def code_vectors(self, indices: jnp.ndarray) -> jnp.ndarray:
        """Integer indices [B, *S] -> grid points [B, *S, len(levels)] in [-1, 1]."""
        return self.indices_to_grid(indices)

    def nearest_indices(self, vectors: jnp.ndarray) -> jnp.ndarray:
        """Points [B, *S, len(levels)] in code space -> index of the nearest grid point [B, *S]."""
        half_width = self._levels() // 2
        digits = jnp.clip(
            jnp.round(vectors * half_width), -half_width, self._levels() - 1 - half_width
        )
        return self.codes_to_indices(digits / half_width)


class ResidualVQ(nn.Module):
    """Residual vector quantization (Zeghidour et al. 2021, SoundStream; Défossez et al. 2022).

    Stage s quantizes what stages 0..s-1 left over: r_0 = z, q_s = nearest code of r_s in
    codebook s, r_{s+1} = r_s - q_s; the quantized latent is the sum of the stage codes. Indices
    gain a trailing stage axis `[B, *S, num_stages]`, and `num_stages * log2(num_codes)` bits
    describe one latent position.

    Quantizer dropout: at training each example keeps only its first n_q stages, with n_q drawn
    uniformly from 1..num_stages per example (at the global batch shape, from the `quantizer`
    rng stream), so one decoder learns to decode every prefix and one model serves several
    bitrates. Dropout only decides which stage codes reach the decoder: every stage still
    quantizes (and, with EMA, learns from) the residuals of every example, which exist whatever
    n_q is. Evaluation uses the first `eval_stages` stages (all when None); `indices_to_codes`
    and `code_vectors` take a `num_stages` argument for decoding at a lower bitrate.

    One straight-through estimator spans all stages (`z + sg(sum q - z)`), so the encoder gets
    the decoder's gradient once, not once per stage; each stage adds its own codebook and
    commitment losses. Inputs are projected to `code_dim` once (when `input_dim` differs), the
    residuals live in that space, and the sum is projected back.

    Attributes:
      num_stages: number of residual codebooks.
      num_codes, code_dim, beta, use_ema, ema_decay, ema_epsilon, restart_after_steps: as in
        `VectorQuantizer`, shared by every stage (each stage has its own codebook, EMA
        statistics and dead-code restarts; `apply_codebook_restarts` finds them all).
      quantizer_dropout: draw n_q per example at training (otherwise all stages are used).
      eval_stages: stages used outside training; None means all.
      input_dim: channel count of the inputs (None: inputs have `code_dim` channels).
    """

    num_stages: int
    num_codes: int
    code_dim: int
    beta: float = 0.25
    use_ema: bool = False
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    restart_after_steps: int = 0
    quantizer_dropout: bool = True
    eval_stages: int | None = None
    input_dim: int | None = None
    dtype: Any = jnp.float32

    def setup(self):
        if self.num_stages < 1:
            raise ValueError(f"ResidualVQ needs num_stages >= 1, got {self.num_stages}")
        if self.eval_stages is not None and not 1 <= self.eval_stages <= self.num_stages:
            raise ValueError(
                f"eval_stages={self.eval_stages} must be in [1, num_stages={self.num_stages}]"
            )
        if self._projected:
            self.in_proj = nn.Dense(self.code_dim, dtype=self.dtype)
            self.out_proj = nn.Dense(self.input_dim, dtype=self.dtype)
        self.stages = [
            VectorQuantizer(
                num_codes=self.num_codes,
                code_dim=self.code_dim,
                beta=self.beta,
                use_ema=self.use_ema,
                ema_decay=self.ema_decay,
                ema_epsilon=self.ema_epsilon,
                restart_after_steps=self.restart_after_steps,
                dtype=self.dtype,
            )
            for _ in range(self.num_stages)
        ]

    @property
    def _projected(self) -> bool:
        return self.input_dim is not None and self.input_dim != self.code_dim

    def _check_stages(self, num_stages: int | None) -> int:
        if num_stages is None:
            return self.eval_stages or self.num_stages
        if not 1 <= num_stages <= self.num_stages:
            raise ValueError(f"num_stages={num_stages} must be in [1, {self.num_stages}]")
        return num_stages

    def __call__(
        self, z: jnp.ndarray, *, train: bool = False, num_stages: int | None = None
    ) -> QuantizerOutput:
        expected = self.input_dim if self.input_dim is not None else self.code_dim
        if z.shape[-1] != expected:
            raise ValueError(f"ResidualVQ expects {expected} channels, got shape {z.shape}")
        if self._projected:
            z = self.in_proj(z)
        z = z.astype(jnp.float32)  # [B, *S, d]
        residual = z
        codes, indices, loss, stats = [], [], jnp.zeros(()), {}
        for s, stage in enumerate(self.stages):
            out = stage(residual, train=train)
            quantized = jax.lax.stop_gradient(out.z_q)  # the stage's code vectors [B, *S, d]
            codes.append(quantized)
            indices.append(out.indices)
            loss = loss + out.loss
            for name, value in out.stats.items():
                stats[f"stage{s}_{name}"] = value
            residual = residual - quantized
        codes = jnp.stack(codes, axis=-2)  # [B, *S, num_stages, d]
        if train and self.quantizer_dropout and not self.is_initializing():
            # n_q in 1..num_stages per example; keep[b, s] = s < n_q[b].
            rng = self.make_rng(RNG_STREAM)
            kept = jax.random.randint(rng, (z.shape[0],), 1, self.num_stages + 1)  # [B]
            keep = jnp.arange(self.num_stages) < kept[:, None]  # [B, num_stages]
            keep = keep.reshape(z.shape[0], *(1,) * (z.ndim - 2), self.num_stages)
            stats["mean_stages_used"] = jnp.mean(kept.astype(jnp.float32))
        else:
            used = self.num_stages if train else self._check_stages(num_stages)
            keep = jnp.arange(self.num_stages) < used  # [num_stages]
        keep = keep.astype(jnp.float32)[..., None]  # broadcasts against [B, *S, num_stages, d]
        quantized_sum = jnp.sum(codes * keep, axis=-2)  # [B, *S, d]
        z_q = z + jax.lax.stop_gradient(quantized_sum - z)  # straight-through over all stages
        z_q = self.project_codes(z_q)
        stats["batch_usage"] = jnp.mean(
            jnp.stack([stats[f"stage{s}_batch_usage"] for s in range(self.num_stages)])
        )
        stats["batch_perplexity"] = jnp.mean(
            jnp.stack([stats[f"stage{s}_batch_perplexity"] for s in range(self.num_stages)])
        )
        return QuantizerOutput(z_q, jnp.stack(indices, axis=-1), loss, stats)

    def code_vectors(self, indices: jnp.ndarray, num_stages: int | None = None) -> jnp.ndarray:
        """Indices [B, *S, num_stages] -> summed codes [B, *S, code_dim] of the first
        `num_stages` stages (default: `eval_stages`, or all)."""
        if indices.shape[-1] != self.num_stages:
            raise ValueError(
                f"ResidualVQ indices need a trailing axis of {self.num_stages} stages, got "
                f"shape {indices.shape}"
            )
        used = self._check_stages(num_stages)
        total = 0.0
        for s in range(used):
            total = total + self.stages[s].code_vectors(indices[..., s])
        return jnp.asarray(total, jnp.float32)

    def indices_to_codes(self, indices: jnp.ndarray, num_stages: int | None = None) -> jnp.ndarray:
        """Indices [B, *S, num_stages] -> decoder input [B, *S, input_dim]."""
        return self.project_codes(self.code_vectors(indices, num_stages))

    def project_codes(self, vectors: jnp.ndarray) -> jnp.ndarray:
        """Summed code-space vectors [B, *S, code_dim] -> decoder input [B, *S, input_dim], as
        they are (no snapping to the stages' codebooks)."""
        return self.out_proj(vectors) if self._projected else vectors

    def nearest_indices(self, vectors: jnp.ndarray) -> jnp.ndarray:
        """Code-space vectors [B, *S, code_dim] -> greedy residual indices [B, *S, num_stages]."""
        residual = vectors.astype(jnp.float32)
        indices = []
        for stage in self.stages:
            index = stage.nearest_indices(residual)
            indices.append(index)
            residual = residual - stage.code_vectors(index)
        return jnp.stack(indices, axis=-1)
