"""Autoregressive objective (`config.trainer = 'autoregressive'`): a causal token DiT trained by
next-token prediction on text tokens, the baseline beside masked diffusion (`trainers/masked.py`).

The backbone is the masked-diffusion denoiser itself, `TokenDiT`, with `causal=True` and no time
conditioning, so the two generators differ only in the attention mask and the objective. Its
extra id `vocab_size` (the mask of masked diffusion) is the start token here: the model reads
`[start, x_0, ..., x_{L-2}]` and its logits at position i are p(x_i | x_<i); the start id is
never predicted (its logit is -inf, as the mask's in SUBS).

Metrics: the training loss is the negative log-likelihood in nats per token over all L
positions (padding included, as the masked objective's NELBO). Evaluation reports the exact
NLL in bits per token under the masked objective's names, `nelbo_bits_per_token` and
`nelbo_bits_per_text_token` (the whole sequence's code length over its non-pad tokens): an
exact likelihood is its own tight bound, so the two generators' figures compare directly and
the same scorers read them.

Sampling draws the L tokens left to right, each from the model's distribution at temperature
`sampling.temperature` (1 = ancestral sampling of the model), in one jit-compiled `lax.scan`
that reruns the model on the whole buffer at every step (no key/value cache: L model calls,
the same count as uncached masked diffusion with L steps). Class-conditional models take
classifier-free guidance on the next-token log-probabilities.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmgen_jax.data import text as text_data
from mmgen_jax.models.token_dit import TokenDiT
from mmgen_jax.trainers import generator as generator_lib
from mmgen_jax.trainers import masked as masked_lib
from mmgen_jax.trainers.objective import Batch
from mmgen_jax.trainers.state import compute_dtype

SAMPLERS = ("ancestral",)

# model_fn(inputs [B, L] int32, y [B] or None) -> logits [B, L, V + 1]
ModelFn = Callable[[jax.Array, Any], jax.Array]


def shift_right(x: jax.Array, start_id: int) -> jax.Array:
    """Model inputs for targets x [B, L]: [start, x_0, ..., x_{L-2}] per row."""
    start = jnp.full((x.shape[0], 1), start_id, x.dtype)
    return jnp.concatenate([start, x[:, :-1]], axis=1)


def next_token_log_probs(logits: jax.Array, start_id: int) -> jax.Array:
    """Logits [..., V + 1] -> log-probabilities [..., V + 1], float32, with the start id at
    probability 0."""
    ids = jnp.arange(logits.shape[-1])
    logits = jnp.where(ids == start_id, -jnp.inf, logits.astype(jnp.float32))
    return jax.nn.log_softmax(logits, axis=-1)


def sequence_nll(model_fn: ModelFn, x: jax.Array, start_id: int, y: Any = None) -> jax.Array:
    """-log p(x) in nats per sequence [B] of token ids x [B, L] under a causal model."""
    log_probs = next_token_log_probs(model_fn(shift_right(x, start_id), y), start_id)
    target = jnp.take_along_axis(log_probs, x[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return -jnp.sum(target, axis=-1)


def guided_log_probs(
    model_fn: ModelFn,
    inputs: jax.Array,
    start_id: int,
    y: Any = None,
    cfg_scale: float = 1.0,
    null_label: Any = None,
) -> jax.Array:
    """Next-token log-probs [B, L, V + 1]; with cfg_scale != 1, log_softmax(u + s (c - u)) of
    the conditional and unconditional log-probs c, u (the batch runs twice, with y and with
    `null_label`)."""
    if cfg_scale == 1.0:
        return next_token_log_probs(model_fn(inputs, y), start_id)
    if y is None or null_label is None:
        raise ValueError("classifier-free guidance (cfg_scale != 1) needs y and null_label")
    y = jnp.asarray(y)
    null = jnp.broadcast_to(jnp.asarray(null_label, y.dtype), y.shape)
    logits = model_fn(jnp.concatenate([inputs, inputs]), jnp.concatenate([y, null]))
    cond, uncond = jnp.split(next_token_log_probs(logits, start_id), 2)
    finite = jnp.isfinite(cond) & jnp.isfinite(uncond)  # the start id stays at -inf
    guided = jnp.where(finite, uncond + cfg_scale * (cond - uncond), -jnp.inf)
    return jax.nn.log_softmax(guided, axis=-1)


def ancestral_sample(
    model_fn: ModelFn,
    shape: tuple[int, int],
    start_id: int,
    rng: jax.Array,
    *,
    y: Any = None,
    cfg_scale: float = 1.0,
    null_label: Any = None,
    temperature: float = 1.0,
) -> jax.Array:
    """Token ids [B, L] drawn left to right from a causal model (one `lax.scan` of L steps).

    Step i reruns the model on the buffer [start, x_0, ..., x_{i-1}, ...] (later entries are
    placeholders a causal model cannot see) and draws x_i from `fold_in(rng, i)` at the full
    batch shape, with the log-probs divided by `temperature`.
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    batch, length = shape
    buffer = jnp.full((batch, length + 1), start_id, jnp.int32)  # [B, L + 1]

    def step(buffer, index):
        log_probs = guided_log_probs(
            model_fn, buffer[:, :length], start_id, y, cfg_scale, null_label
        )  # [B, L, V + 1]
        current = jax.lax.dynamic_index_in_dim(log_probs, index, axis=1, keepdims=False)
        current = jax.nn.log_softmax(current / temperature, axis=-1)  # start id stays -inf
        draw = jax.random.categorical(jax.random.fold_in(rng, index), current, axis=-1)
        buffer = jax.lax.dynamic_update_index_in_dim(
            buffer, draw.astype(jnp.int32), index + 1, axis=1
        )
        return buffer, None

    buffer, _ = jax.lax.scan(step, buffer, jnp.arange(length))
    return buffer[:, 1:]


class AutoregressiveObjective:
    """Trains a causal `TokenDiT` by next-token prediction on text tokens."""

    space = "tokens"

    def __init__(self, config: ml_collections.ConfigDict, info: dict[str, Any]):
        generator = config.generator
        if generator.space != "tokens":
            raise ValueError(
                f"the autoregressive objective models text tokens (generator.space='tokens'), "
                f"got generator.space={generator.space!r}"
            )
        if info.get("modality") != "text":
            raise ValueError(
                "the autoregressive objective needs a text dataset (data/text.py); "
                f"{config.data.name!r} gives {info.get('modality', 'image')} data"
            )
        self.info = info
        self.num_classes = int(info["num_classes"] or 0) if generator.class_conditional else 0
        self.vocab_size = int(info["vocab_size"])
        self.token_shape = tuple(info["shape"])  # (L,)
        if len(self.token_shape) != 1:
            raise ValueError(f"text tokens must be [L], the dataset gives {self.token_shape}")
        self.pad_id = info.get("pad_id")
        self.start_id = self.vocab_size  # the model's extra id
        model = config.model
        self.model = TokenDiT(
            vocab_size=self.vocab_size,
            hidden_size=model.hidden_size,
            depth=model.depth,
            num_heads=model.num_heads,
            mlp_ratio=model.mlp_ratio,
            num_classes=self.num_classes,
            class_dropout_prob=model.class_dropout_prob,
            time_conditioned=False,
            causal=True,
            dtype=compute_dtype(config),
        )
        self.sampling = config.sampling
        self.check_sampling_request(None, float(config.sampling.cfg_scale))
        self.sampling_settings()  # fails early on a bad sampler or temperature
        self._samplers: dict[tuple, Any] = {}
        self.last_num_calls: int | None = None  # model calls of the last `sample`

    def _labels(self, batch: Batch):
        return batch["label"].astype(jnp.int32) if self.num_classes else None

    def _model_fn(self, params, train: bool = False, dropout_rng=None) -> ModelFn:
        def model_fn(inputs, y):
            rngs = {"label_dropout": dropout_rng} if dropout_rng is not None else None
            return self.model.apply({"params": params}, inputs, None, y, train=train, rngs=rngs)

        return model_fn

    # -- objective protocol ---------------------------------------------------------------------

    def init_variables(self, rng: jax.Array, batch: Batch) -> dict[str, Any]:
        inputs = jnp.zeros((1, *self.token_shape), jnp.int32)
        y = jnp.zeros((1,), jnp.int32) if self.num_classes else None
        return dict(self.model.init({"params": rng}, inputs, None, y))

    def loss(self, params, model_state, batch: Batch, rng: jax.Array):
        x = batch["tokens"].astype(jnp.int32)  # [B, L]
        model_fn = self._model_fn(params, train=True, dropout_rng=rng)
        per_token = sequence_nll(model_fn, x, self.start_id, self._labels(batch)) / x.shape[1]
        metrics = {"nelbo_bits_per_token": jnp.mean(per_token) / math.log(2.0)}
        return jnp.mean(per_token), (model_state, metrics)

    def post_update(self, params, model_state):
        return params

    def eval_step(self, params, model_state, batch: Batch) -> dict[str, jax.Array]:
        x = batch["tokens"].astype(jnp.int32)
        nll = sequence_nll(self._model_fn(params), x, self.start_id, self._labels(batch))
        mask = batch["mask"]
        sums = {"nelbo_nats": jnp.sum(nll * mask), "count": jnp.sum(mask)}
        if self.pad_id is not None:
            real = jnp.sum(x != self.pad_id, axis=-1).astype(jnp.float32)
            sums["text_tokens"] = jnp.sum(real * mask)
        return sums

    def finalize_eval(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
        return masked_lib.bits_per_token(sums, self.token_shape[0])

    def visualize(self, params, model_state, batch: Batch) -> dict[str, Any]:
        return masked_lib.visualize_token_samples(self, params, model_state)

    # -- sampling -------------------------------------------------------------------------------

    def sampling_settings(
        self,
        sampler: str | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        eta: float | None = None,
        cfg_channels: int | None = None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        """Sampler settings, unset ones from the config's `sampling` section (the keyword
        arguments of `sample`). There is one step per token: `steps`, if given, must be L."""
        if eta is not None or cfg_channels is not None:
            raise ValueError("eta and cfg_channels do not apply to autoregressive sampling")
        length = self.token_shape[0]
        if steps is not None and int(steps) != length:
            raise ValueError(
                f"autoregressive sampling takes one step per token: steps={steps}, but the "
                f"sequences have {length} tokens"
            )
        sampling = self.sampling
        settings = dict(
            sampler=sampler or sampling.sampler,
            steps=length,
            cfg_scale=float(sampling.cfg_scale if cfg_scale is None else cfg_scale),
            temperature=float(sampling.temperature if temperature is None else temperature),
        )
        if settings["sampler"] not in SAMPLERS:
            raise ValueError(f"sampler={settings['sampler']!r} is not one of {SAMPLERS}")
        if settings["temperature"] <= 0:
            raise ValueError(f"temperature={settings['temperature']} must be > 0")
        return settings

    def check_sampling_request(self, labels, cfg_scale: float, num_samples=None) -> None:
        """Clear errors for bad labels (range, count) or guidance without conditioning."""
        generator_lib.check_sampling_request(labels, cfg_scale, self.num_classes, num_samples)

    def sample(
        self,
        params,
        model_state,
        labels,
        rng: jax.Array,
        *,
        num_samples: int,
        **settings: Any,
    ) -> jax.Array:
        """`num_samples` token sequences [N, L]. Keyword settings as `sampling_settings`; the
        number of model calls is left in `self.last_num_calls`."""
        del model_state  # nothing frozen beside the parameters
        settings = self.sampling_settings(**settings)
        self.check_sampling_request(labels, settings["cfg_scale"], num_samples)
        key = (*settings.values(), num_samples)
        if key not in self._samplers:
            self._samplers[key] = jax.jit(
                functools.partial(
                    self._sample,
                    num_samples=num_samples,
                    cfg_scale=settings["cfg_scale"],
                    temperature=settings["temperature"],
                )
            )
        y = None if labels is None else jnp.asarray(labels, jnp.int32)
        samples = self._samplers[key](params, y, rng)
        self.last_num_calls = settings["steps"]
        return samples

    def _sample(self, params, y, rng, *, num_samples, cfg_scale, temperature):
        return ancestral_sample(
            self._model_fn(params),
            (num_samples, self.token_shape[0]),
            self.start_id,
            rng,
            y=y,
            cfg_scale=cfg_scale,
            null_label=self.num_classes if y is not None else None,
            temperature=temperature,
        )

    def decode_text(self, tokens: np.ndarray) -> list[str]:
        """Token ids [N, L] -> N texts."""
        return text_data.decode_batch(tokens, self.info)
