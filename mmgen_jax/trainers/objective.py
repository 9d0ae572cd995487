"""The interface between the shared training loop and one model family.

The loop (`trainers/loop.py`) owns the mesh, data, optimizer, checkpoints, logging and the jit
boundaries; an `Objective` owns the model and says how to initialise it, what its loss is, how to
evaluate it and what to draw. Adding a model family means writing one Objective, nothing else.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import numpy as np

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class Objective(Protocol):
    """What a model family provides to the training loop. All jax methods are traced in jit."""

    def init_variables(self, rng: jax.Array, batch: Batch) -> dict[str, Any]:
        """Model variables ({'params': ..., other collections}) for a batch of this shape."""

    def loss(
        self, params: Any, model_state: Any, batch: Batch, rng: jax.Array
    ) -> tuple[jax.Array, tuple[Any, Metrics]]:
        """(scalar loss, (new model_state, scalar metrics)) for one global training batch."""

    def post_update(self, params: Any, model_state: Any) -> Any:
        """Adjust params after the optimizer step (e.g. dead-code restarts); usually identity."""

    def eval_step(self, params: Any, model_state: Any, batch: Batch) -> Metrics:
        """Sums over the real examples of one batch (`batch['mask']`), with a 'count' entry.

        Entries may be arrays (e.g. code histograms); the loop adds them across batches.
        """

    def finalize_eval(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
        """Turn the summed eval outputs of a whole split into metrics."""

    def visualize(self, params: Any, model_state: Any, batch: Batch) -> dict[str, Any]:
        """What to save at each evaluation, by name: pictures ([H, W, C] uint8),
        `metrics.media.Audio` (written as WAV) or `metrics.media.Video` (written as GIF)."""

    # Optional: `training_arrays(self) -> dict[str, np.ndarray] | None`. Arrays of equal length
    # the loop draws training batches from (`data/arrays.py`) instead of the TFDS pipeline, e.g.
    # a latent generator's latents encoded once; None (or no such method): the pipeline.
