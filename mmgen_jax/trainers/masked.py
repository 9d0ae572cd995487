"""Masked-diffusion objective (`config.trainer = 'masked'`): a token DiT trained with the MDLM
NELBO (`diffusion/masked.py`) on discrete tokens.

Two token sources (`generator.space`):
  'tokens'  text tokens from the input pipeline (`batch['tokens']` [B, L], `data/text.py`);
  'latent'  VQ code-index grids [B, h, w] of images, encoded by a frozen trained VQ-VAE
            (`generator.tokenizer_workdir`, restored as `trainers/generator.FrozenTokenizer`
            does); samples are decoded back to images. The tokenizer's variables live in
            `model_state` so a checkpoint alone is enough to sample.

Conditioning: class labels with label dropout when `generator.class_conditional` and the data
has labels (classifier-free guidance at sampling, `sampling.cfg_scale`); time through adaLN
unless `model.time_conditioned=False`, which makes cached sampling exact
(`sampling.cache=True` is refused for a time-conditioned model).

Schedule: `diffusion.schedule` with `diffusion.position_shift` w (0: MDLM, every position on
the same schedule; w > 0: later positions are masked earlier and revealed later, leaning toward
left-to-right generation; `diffusion/masked.py`).

Training times: uniform (MDLM), or importance-sampled with more small t (`diffusion.low_t_max`,
`diffusion.low_t_fraction`, `diffusion/masked.sample_times`), reweighted so the loss stays the
NELBO unless `diffusion.importance_weighted=False`; evaluation always draws t uniformly.

Metrics: the training loss is the NELBO in nats per token; evaluation reports the NELBO in bits
per token (`nelbo_bits_per_token`, averaged over `diffusion.eval_draws` draws of t and masks
with fixed keys), and for text with padding also per non-pad token
(`nelbo_bits_per_text_token`: the whole sequence's code length over its real tokens).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmgen_jax.data import text as text_data
from mmgen_jax.diffusion import masked
from mmgen_jax.metrics import present
from mmgen_jax.models.token_dit import TokenDiT
from mmgen_jax.models.vqvae import VQVAE
from mmgen_jax.sharding import host_array
from mmgen_jax.trainers import generator as generator_lib
from mmgen_jax.trainers.generator import TOKENIZER, FrozenTokenizer
from mmgen_jax.trainers.objective import Batch
from mmgen_jax.trainers.state import compute_dtype

SPACES = ("tokens", "latent")
# 'ancestral': MDLM (positions revealed at random); 'confidence': the most confident draws first
SAMPLERS = ("ancestral", "confidence")


def bits_per_token(sums: dict[str, np.ndarray], tokens_per_example: int) -> dict[str, float]:
    """Summed negative log-likelihood bounds (`nelbo_nats` over `count` examples, optionally
    `text_tokens` that are not padding) -> bits per token and per text token. Shared by the
    masked (NELBO) and autoregressive (exact NLL) token objectives, so their figures compare."""
    nats = float(sums["nelbo_nats"])
    tokens = float(sums["count"]) * tokens_per_example
    metrics = {"nelbo_bits_per_token": nats / tokens / math.log(2.0)}
    if "text_tokens" in sums and float(sums["text_tokens"]) > 0:
        metrics["nelbo_bits_per_text_token"] = nats / float(sums["text_tokens"]) / math.log(2.0)
    return metrics


def visualize_token_samples(objective, params, model_state) -> dict[str, Any]:
    """`grid_per_class` samples of every class (or of the unconditional model) from a token
    objective's `sample`, presented for the writers (decoded text, or pictures of VQ grids)."""
    per_class = int(objective.sampling.grid_per_class)
    num_classes = objective.num_classes
    labels = np.repeat(np.arange(num_classes), per_class) if num_classes else None
    count = len(labels) if labels is not None else per_class
    samples = host_array(
        objective.sample(params, model_state, labels, jax.random.PRNGKey(0), num_samples=count)
    )
    return {"samples": present.present(samples, per_class, objective.info)}


class MaskedDiffusionObjective:
    """Trains a `TokenDiT` with the masked-diffusion NELBO on text tokens or VQ index grids."""

    def __init__(self, config: ml_collections.ConfigDict, info: dict[str, Any]):
        generator = config.generator
        if generator.space not in SPACES:
            raise ValueError(f"generator.space={generator.space!r} is not one of {SPACES}")
        self.space = generator.space
        self.info = info
        self.num_classes = int(info["num_classes"] or 0) if generator.class_conditional else 0
        self.tokenizer = None
        if self.space == "tokens":
            if info.get("modality") != "text":
                raise ValueError(
                    "generator.space='tokens' needs a text dataset (data/text.py); "
                    f"{config.data.name!r} gives {info.get('modality', 'image')} data"
                )
            self.vocab_size = int(info["vocab_size"])
            self.token_shape = tuple(info["shape"])  # (L,)
            self.pad_id = info.get("pad_id")
        else:
            self.tokenizer = FrozenTokenizer(generator.tokenizer_workdir)
            if self.tokenizer.signal_shape != tuple(info["shape"]):
                raise ValueError(
                    f"the tokenizer in {generator.tokenizer_workdir!r} takes signals of shape "
                    f"{self.tokenizer.signal_shape}, the dataset gives {tuple(info['shape'])}"
                )
            self.vocab_size = int(self.tokenizer.model.quantizer.num_codes)
            self.token_shape = self.tokenizer.latent_shape()[:-1]  # (h, w)
            self.pad_id = None
        self.mask_id = self.vocab_size
        model = config.model
        self.time_conditioned = bool(model.time_conditioned)
        self.model = TokenDiT(
            vocab_size=self.vocab_size,
            hidden_size=model.hidden_size,
            depth=model.depth,
            num_heads=model.num_heads,
            mlp_ratio=model.mlp_ratio,
            num_classes=self.num_classes,
            class_dropout_prob=model.class_dropout_prob,
            time_conditioned=self.time_conditioned,
            dtype=compute_dtype(config),
        )
        diffusion = config.diffusion
        self.schedule = masked.MaskSchedule(
            diffusion.schedule, diffusion.eps, float(diffusion.position_shift)
        )
        self.t_min = float(diffusion.t_min)
        self.antithetic = bool(diffusion.antithetic)
        # Importance-sampled training times (None: uniform); evaluation always draws uniformly.
        self.low_t_max = diffusion.get("low_t_max")
        self.low_t_fraction = diffusion.get("low_t_fraction")
        masked.check_time_proposal(self.t_min, self.low_t_max, self.low_t_fraction)
        # False: train on the proposal-weighted loss (more weight on small t, not the NELBO).
        self.importance_weighted = bool(diffusion.get("importance_weighted", True))
        self.eval_draws = int(diffusion.eval_draws)
        self.sampling = config.sampling
        self.check_sampling_request(None, float(config.sampling.cfg_scale))
        self.sampling_settings()  # fails early on a cache/time-conditioning conflict
        self._samplers: dict[tuple, Any] = {}
        self.last_num_calls: int | None = None  # denoiser calls of the last `sample`

    # -- tokens ---------------------------------------------------------------------------------

    def tokens_of(self, model_state, batch: Batch) -> jax.Array:
        """The batch's tokens [B, *token_shape] int32 (VQ indices of its images for 'latent')."""
        if self.space == "tokens":
            return batch["tokens"].astype(jnp.int32)
        indices = self.tokenizer.model.apply(
            model_state[TOKENIZER], batch["image"], method=VQVAE.encode_to_indices
        )
        return jax.lax.stop_gradient(indices).astype(jnp.int32)

    def _labels(self, batch: Batch):
        return batch["label"].astype(jnp.int32) if self.num_classes else None

    def _model_fn(self, params, train: bool = False, dropout_rng=None):
        def model_fn(z_t, t, y):
            rngs = {"label_dropout": dropout_rng} if dropout_rng is not None else None
            return self.model.apply({"params": params}, z_t, t, y, train=train, rngs=rngs)

        return model_fn

    # -- objective protocol ---------------------------------------------------------------------

    def init_variables(self, rng: jax.Array, batch: Batch) -> dict[str, Any]:
        z = jnp.zeros((1, *self.token_shape), jnp.int32)
        y = jnp.zeros((1,), jnp.int32) if self.num_classes else None
        variables = dict(self.model.init({"params": rng}, z, jnp.zeros((1,)), y))
        if self.tokenizer is not None:
            variables[TOKENIZER] = self.tokenizer.variables
        return variables

    def _nelbo(self, params, model_state, batch, rng, train: bool) -> dict[str, jax.Array]:
        x = self.tokens_of(model_state, batch)  # [B, *token_shape]
        diffusion_rng, dropout_rng = jax.random.split(rng)
        proposal = (self.low_t_max, self.low_t_fraction) if train else (None, None)
        return masked.nelbo(
            self._model_fn(params, train, dropout_rng if train else None),
            x,
            diffusion_rng,
            self.schedule,
            self.mask_id,
            self._labels(batch),
            t_min=self.t_min,
            antithetic=self.antithetic,
            low_t_max=proposal[0],
            low_t_fraction=proposal[1],
        )

    def loss(self, params, model_state, batch: Batch, rng: jax.Array):
        terms = self._nelbo(params, model_state, batch, rng, train=True)
        per_token = terms["nelbo"] / math.prod(self.token_shape)  # [B] nats per token
        metrics = {
            "nelbo_bits_per_token": jnp.mean(per_token) / math.log(2.0),
            "masked_fraction": jnp.mean(terms["masked_fraction"]),
        }
        if not self.importance_weighted:
            per_token = terms["proposal_weighted"] / math.prod(self.token_shape)
        return jnp.mean(per_token), (model_state, metrics)

    def post_update(self, params, model_state):
        return params

    def eval_step(self, params, model_state, batch: Batch) -> dict[str, jax.Array]:
        # Fixed keys: every evaluation scores the same times and masks.
        draws = [
            self._nelbo(params, model_state, batch, jax.random.PRNGKey(i), train=False)["nelbo"]
            for i in range(self.eval_draws)
        ]
        nelbo = jnp.mean(jnp.stack(draws), axis=0)  # [B] nats per sequence
        mask = batch["mask"]
        sums = {"nelbo_nats": jnp.sum(nelbo * mask), "count": jnp.sum(mask)}
        if self.pad_id is not None:
            real = jnp.sum(batch["tokens"] != self.pad_id, axis=-1).astype(jnp.float32)
            sums["text_tokens"] = jnp.sum(real * mask)
        return sums

    def finalize_eval(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
        return bits_per_token(sums, math.prod(self.token_shape))

    def visualize(self, params, model_state, batch: Batch) -> dict[str, Any]:
        return visualize_token_samples(self, params, model_state)

    # -- sampling -------------------------------------------------------------------------------

    def sampling_settings(
        self,
        sampler: str | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        eta: float | None = None,
        cfg_channels: int | None = None,
        cache: bool | None = None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        """Sampler settings, unset ones from the config's `sampling` section (the keyword
        arguments of `sample`). `eta` and `cfg_channels` belong to Gaussian samplers."""
        if eta is not None or cfg_channels is not None:
            raise ValueError("eta and cfg_channels do not apply to masked-diffusion sampling")
        sampling = self.sampling
        settings = dict(
            sampler=sampler or sampling.sampler,
            steps=int(steps or sampling.steps),
            cfg_scale=float(sampling.cfg_scale if cfg_scale is None else cfg_scale),
            cache=bool(sampling.cache if cache is None else cache),
            temperature=float(sampling.temperature if temperature is None else temperature),
        )
        if settings["sampler"] not in SAMPLERS:
            raise ValueError(f"sampler={settings['sampler']!r} is not one of {SAMPLERS}")
        if settings["cache"] and self.time_conditioned:
            raise ValueError(
                "sampling.cache=True is exact only for a denoiser without time conditioning; "
                "set model.time_conditioned=False or sampling.cache=False"
            )
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
        """`num_samples` samples: token ids [N, L] for text, images [N, H, W, C] in [-1, 1] for
        'latent'. Keyword settings as `sampling_settings`; the number of denoiser calls is
        left in `self.last_num_calls`."""
        settings = self.sampling_settings(**settings)
        self.check_sampling_request(labels, settings["cfg_scale"], num_samples)
        key = (*settings.values(), num_samples)
        if key not in self._samplers:
            self._samplers[key] = jax.jit(
                functools.partial(self._sample, num_samples=num_samples, **settings)
            )
        y = None if labels is None else jnp.asarray(labels, jnp.int32)
        samples, calls = self._samplers[key](params, model_state, y, rng)
        self.last_num_calls = int(calls)
        return samples

    def _sample(
        self,
        params,
        model_state,
        y,
        rng,
        *,
        num_samples,
        sampler,
        steps,
        cfg_scale,
        cache,
        temperature,
    ):
        tokens, calls = masked.ancestral_sample(
            self._model_fn(params),
            self.schedule,
            (num_samples, *self.token_shape),
            self.mask_id,
            steps,
            rng,
            y=y,
            cfg_scale=cfg_scale,
            null_label=self.num_classes if y is not None else None,
            time_conditioned=self.time_conditioned,
            cache=cache,
            temperature=temperature,
            order="confidence" if sampler == "confidence" else "random",
        )
        if self.space == "tokens":
            return tokens, calls
        images = self.tokenizer.model.apply(
            model_state[TOKENIZER], tokens, method=VQVAE.decode_indices
        )
        return jnp.clip(images, -1.0, 1.0), calls

    def decode_text(self, tokens: np.ndarray) -> list[str]:
        """Token ids [N, L] -> N texts (text models only)."""
        return text_data.decode_batch(tokens, self.info)
