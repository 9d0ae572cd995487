"""A DiT over discrete tokens: the denoiser of masked diffusion (`diffusion/masked.py`), and
with `causal=True` the next-token model of the autoregressive baseline
(`trainers/autoregressive.py`).

The same transformer as `models/dit.py` (its `DiTBlock`, `TimestepEmbedder`, `LabelEmbedder`,
`FinalLayer` and N-d sin-cos positions, imported, not copied), with a token embedding in place
of the patch embedding and a head of logits over the vocabulary plus the mask token. Inputs are
token ids of any rank: `[B, L]` text or `[B, h, w]` grids of VQ code indices; every position is a
transformer token (no patching) and attention is bidirectional, or causal over the row-major
flattened positions when `causal=True` (position i attends to positions <= i only).

Conditioning enters through adaLN as in DiT: c = t-embedding (if `time_conditioned`) + label
embedding (if `num_classes`). With neither, c is a learned constant vector. A denoiser without
time conditioning is what makes sampling with cached outputs exact (MDLM sec. 4.1): its output
depends on z_t only.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mmgen_jax.models.dit import (
    DiTBlock,
    FinalLayer,
    LabelEmbedder,
    TimestepEmbedder,
    sincos_pos_embed,
)
from mmgen_jax.models.layers import constrain_activation, materialize_cotangent

# Times t in [0, 1] are scaled to the DiT timestep range before the sinusoidal features, whose
# frequencies are made for integer steps 0..1000.
TIME_SCALE = 1000.0


class TokenDiT(nn.Module):
    """DiT over token ids: (z [B, *S] int, t [B], y [B]) -> logits, bidirectional or causal.

    Call: `model.apply(variables, z, t, y=None, train=False, force_drop_ids=None, rngs=...)`
      z: [B, *S] int ids in [0, vocab_size] (vocab_size: the mask id, or a causal model's start id);
      t: [B] float times in [0, 1] (ignored when `time_conditioned=False`);
      y: [B] int labels (num_classes = the null class) or None for an unconditional model.
    Returns float32 logits [B, *S, vocab_size + 1]; the last entry belongs to the mask id,
    which the SUBS parametrisation sets to -inf.

    Attributes:
      vocab_size: real token ids 0..vocab_size-1; the mask is id vocab_size.
      hidden_size, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP ratio.
      num_classes: label classes; 0 for an unconditional model.
      class_dropout_prob: label dropout for classifier-free guidance.
      time_conditioned: add a t-embedding to the adaLN conditioning.
      causal: attend only to earlier and equal positions (row-major order), so the logits at
        position i depend on z[..., :i + 1] only; False (bidirectional) for masked diffusion.
      dtype: compute dtype of the matmuls (parameters, softmax and logits stay fp32).
    """

    vocab_size: int
    hidden_size: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 0
    class_dropout_prob: float = 0.1
    time_conditioned: bool = True
    causal: bool = False
    dtype: Any = jnp.float32

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @nn.compact
    def __call__(
        self,
        z: jnp.ndarray,
        t: jnp.ndarray | None = None,
        y: jnp.ndarray | None = None,
        train: bool = False,
        force_drop_ids: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        if z.ndim < 2:
            raise ValueError(f"TokenDiT expects token ids [B, *S], got shape {z.shape}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.num_classes and y is None:
            raise ValueError(f"class-conditional TokenDiT (num_classes={self.num_classes}) needs y")
        if not self.num_classes and y is not None:
            raise ValueError("unconditional TokenDiT (num_classes=0) got labels y; pass y=None")
        batch, grid = z.shape[0], z.shape[1:]
        # Unit-variance embeddings (PyTorch's nn.Embedding init, as MDLM): with DiT's 0.02 the
        # token identity would be ~2% of the normalised input next to the sin-cos positions
        # (norm ~1 per pair), and the model would first spend many steps growing it.
        table = self.param(
            "token_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
            (self.vocab_size + 1, self.hidden_size),
            jnp.float32,
        )
        h = jnp.take(table, z.reshape(batch, -1), axis=0)  # [B, N, D]
        h = h + sincos_pos_embed(self.hidden_size, grid)[None]  # N-d positions, row-major

        c = self.param(
            "null_condition",
            nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            (self.hidden_size,),
            jnp.float32,
        )
        c = jnp.broadcast_to(c, (batch, self.hidden_size))  # [B, D]
        if self.time_conditioned:
            if t is None:
                raise ValueError("time-conditioned TokenDiT needs t")
            t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,)) * TIME_SCALE
            c = c + TimestepEmbedder(self.hidden_size, self.dtype, name="t_embedder")(t)
        if self.num_classes:
            c = c + LabelEmbedder(
                self.num_classes, self.hidden_size, self.class_dropout_prob, name="y_embedder"
            )(y, train, force_drop_ids)

        mask = None
        if self.causal:
            positions = jnp.arange(h.shape[1])
            mask = positions[:, None] >= positions[None, :]  # [N, N]: query >= key
        for index in range(self.depth):
            h = materialize_cotangent(constrain_activation(h))
            h = DiTBlock(
                self.hidden_size, self.num_heads, self.mlp_ratio, self.dtype, name=f"blocks_{index}"
            )(h, c, mask)  # [B, N, D]
        h = materialize_cotangent(h)
        logits = FinalLayer(self.hidden_size, self.vocab_size + 1, self.dtype, name="final_layer")(
            h, c
        )  # [B, N, V + 1]
        return logits.astype(jnp.float32).reshape(*z.shape, self.vocab_size + 1)
