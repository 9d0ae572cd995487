"""Classifier objective: cross-entropy on labelled data, accuracy on the eval splits.

The trained classifier judges generative models: its accuracy on class-conditional samples and
the Fréchet distance between its features (`Classifier.features`) on real and generated data.
Restore it with `run = inference.load_trained(workdir)` and call
`run.objective.model.apply(run.variables, x)` (logits [B, num_classes]) or
`run.objective.model.apply(run.variables, x, method=Classifier.features)` (features [B, hidden]).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mmgen_jax.augment import augment
from mmgen_jax.models.classifier import DROPOUT_RNG_STREAM, Classifier
from mmgen_jax.trainers.objective import Batch


def random_translate(x: jax.Array, rng: jax.Array, max_shift: int) -> jax.Array:
    """Shift each example of `x` [B, *S, C] by its own random offset in [-max_shift, max_shift].

    Every spatial axis gets an independent offset; pixels shifted in from outside repeat the
    border (edge padding), so no artificial frame appears. On the 1,300 digit training images
    1-pixel shifts are the cheapest way to curb memorisation of each writer's exact placement.
    """
    if max_shift == 0:
        return x
    ndim = x.ndim - 2
    offsets = jax.random.randint(rng, (x.shape[0], ndim), 0, 2 * max_shift + 1)  # [B, ndim]
    padding = [(0, 0)] + [(max_shift, max_shift)] * ndim + [(0, 0)]
    padded = jnp.pad(x, padding, mode="edge")  # [B, *(S + 2 max_shift), C]

    def crop(example: jax.Array, offset: jax.Array) -> jax.Array:  # -> [*S, C]
        return jax.lax.dynamic_slice(example, (*offset, 0), x.shape[1:])

    return jax.vmap(crop)(padded, offsets)


def build_classifier(config: ml_collections.ConfigDict, num_classes: int) -> Classifier:
    """A Classifier from the `model` section of a config."""
    model = config.model
    return Classifier(
        num_classes=num_classes,
        channels=tuple(model.channels),
        hidden=model.hidden,
        dropout_rate=model.dropout_rate,
    )


class ClassifierObjective:
    """Trains a `Classifier` on (`batch['image']`, `batch['label']`) with softmax cross-entropy."""

    def __init__(self, config: ml_collections.ConfigDict, info: dict[str, Any]):
        if not info.get("num_classes"):
            raise ValueError(
                f"dataset {config.data.name!r} has no class labels; the classifier needs them"
            )
        self.model = build_classifier(config, info["num_classes"])
        self.max_translation = config.training.max_translation
        self.augmentations = tuple(config.training.get("augment", ()))

    def init_variables(self, rng: jax.Array, batch: Batch) -> dict[str, Any]:
        return self.model.init({"params": rng}, batch["image"])

    def loss(self, params, model_state, batch: Batch, rng: jax.Array):
        translate_rng, augment_rng, dropout_rng = jax.random.split(rng, 3)
        x = random_translate(batch["image"], translate_rng, self.max_translation)
        x = augment(x, augment_rng, self.augmentations)
        logits = self.model.apply(
            {"params": params, **model_state},
            x,
            train=True,
            rngs={DROPOUT_RNG_STREAM: dropout_rng},
        )  # [B, num_classes]
        logits = logits.astype(jnp.float32)
        labels = batch["label"]
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
        return loss, (model_state, {"accuracy": accuracy})

    def post_update(self, params, model_state):
        return params

    def eval_step(self, params, model_state, batch: Batch) -> dict[str, jax.Array]:
        mask, labels = batch["mask"], batch["label"]
        logits = self.model.apply({"params": params, **model_state}, batch["image"])
        logits = logits.astype(jnp.float32)  # [B, num_classes]
        cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # [B]
        correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)  # [B]
        return {
            "count": jnp.sum(mask),
            "correct": jnp.sum(correct * mask),
            "cross_entropy": jnp.sum(cross_entropy * mask),
        }

    def finalize_eval(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
        count = float(sums["count"])
        return {
            "accuracy": float(sums["correct"]) / count,
            "cross_entropy": float(sums["cross_entropy"]) / count,
        }

    def visualize(self, params, model_state, batch: Batch) -> dict[str, np.ndarray]:
        return {}
