"""The train state and the optimizer built from the config."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.linen import meta as nn_meta


@flax.struct.dataclass
class TrainState:
    """Everything needed to resume training bit for bit.

    Attributes:
      step: [] int32, number of optimizer updates applied.
      params: trainable parameters.
      opt_state: optax state (moments, schedule count).
      ema_params: exponential moving average of `params`, used for evaluation and sampling.
      model_state: non-gradient variable collections (e.g. `vq_state` codebook statistics).
      rng: [2] uint32 base key; step s uses `fold_in(rng, s)`, never a key carried forward.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    model_state: Any
    rng: jax.Array

    def eval_params(self, use_ema: bool) -> Any:
        return self.ema_params if use_ema else self.params


COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
    """`training.compute_dtype`: the dtype of the models' matmuls and convolutions. Parameters,
    optimizer state, quantizer distances, softmax, normalisation statistics and losses stay
    fp32; 'bfloat16' is the choice on TPU/GPU (on XLA:CPU it is not faster)."""
    name = config.training.get("compute_dtype", "float32")
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"training.compute_dtype={name!r} is not one of {COMPUTE_DTYPES}")
    return jnp.dtype(name)


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup to the peak, then cosine decay to `end_learning_rate_factor` x peak."""
    peak = config.learning_rate
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=peak * config.end_learning_rate_factor,
    )


def _decay_mask(params: Any) -> Any:
    """Weight decay on kernels only: not on biases, norm scales or codebooks."""
    flat = flax.traverse_util.flatten_dict(nn_meta.unbox(params))
    mask = {path: path[-1] == "kernel" and leaf.ndim >= 2 for path, leaf in flat.items()}
    return flax.traverse_util.unflatten_dict(mask)


def make_optimizer(
    config: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with warmup + cosine schedule and global-norm gradient clipping."""
    schedule = learning_rate_schedule(config, total_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm),
        optax.adamw(
            schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay, mask=_decay_mask
        ),
    )
    return tx, schedule


def create_train_state(
    params: Any, model_state: Any, tx: optax.GradientTransformation, rng: jax.Array
) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params),
        model_state=model_state,
        rng=rng,
    )
