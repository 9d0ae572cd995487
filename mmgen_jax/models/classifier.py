"""A small CNN classifier whose penultimate features judge generated samples.

It plays the role Inception-v3 plays for FID on natural images: trained once on real data, its
logits give a "classifier accuracy" of class-conditional samples and its penultimate activations
are the feature space in which `metrics/frechet.py` compares real and generated distributions.
It is kept tiny on purpose: it has to train in seconds on the 8x8 digits on a laptop CPU.

The convolutions are N-d (rank read from the input), so the same module classifies audio
`[B, T, C]`, images `[B, H, W, C]` and video `[B, T, H, W, C]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mmgen_jax.models.layers import conv, spatial_ndim

# Name of the rng stream dropout draws from (pass `rngs={DROPOUT_RNG_STREAM: key}` in training).
DROPOUT_RNG_STREAM = "dropout"


class FeatureExtractor(nn.Module):
    """Conv stages (two 3x3 convs + ReLU, then 2x max-pool), flatten, a hidden ReLU layer."""

    channels: Sequence[int]
    hidden: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # [B, *S, C] -> [B, hidden]
        ndim = spatial_ndim(x)
        window = (2,) * ndim
        h = x
        for width in self.channels:
            h = nn.relu(conv(width, ndim)(h))
            h = nn.relu(conv(width, ndim)(h))
            # SAME padding so odd sizes (e.g. 7x7) still pool instead of failing.
            h = nn.max_pool(h, window, strides=window, padding="SAME")  # [B, *S/2^i, width]
        h = h.reshape(h.shape[0], -1)  # [B, prod(S / 2^len(channels)) * channels[-1]]
        return nn.relu(nn.Dense(self.hidden)(h))  # [B, hidden]


class Classifier(nn.Module):
    """Logits from a linear head on the (dropped-out) features of a `FeatureExtractor`.

    Attributes:
      num_classes: number of output logits.
      channels: output channels of each conv stage; each stage halves every spatial axis
        (8x8 digits with two stages -> 2x2 before flattening).
      hidden: width of the penultimate layer, i.e. the dimension of `features`.
      dropout_rate: dropout on the penultimate features, in training only.
    """

    num_classes: int
    channels: Sequence[int] = (32, 64)
    hidden: int = 128
    dropout_rate: float = 0.0

    def setup(self):
        # Submodules in setup (not nn.compact) so `features` and `__call__` share the same layers.
        self.backbone = FeatureExtractor(tuple(self.channels), self.hidden)
        self.dropout = nn.Dropout(self.dropout_rate, rng_collection=DROPOUT_RNG_STREAM)
        self.head = nn.Dense(self.num_classes)

    def features(self, x: jnp.ndarray) -> jnp.ndarray:  # [B, *S, C] -> [B, hidden]
        """Penultimate activations (after ReLU, before dropout): the Fréchet feature space."""
        return self.backbone(x)

    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Class logits [B, num_classes] for a channels-last batch `x` [B, *S, C]."""
        return self.head(self.dropout(self.backbone(x), deterministic=not train))
