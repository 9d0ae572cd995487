"""Diffusion-transformer generator objective, in pixel space or a frozen tokenizer's latent space.

Pixel space: the DiT diffuses the images themselves ([-1, 1]).

Latent space (two-stage generation): a trained VQ-VAE (`generator.tokenizer_workdir`) is
restored once and frozen. Each training batch is encoded to the tokenizer's code-space vectors
(the codebook entries, `[B, *S/f, code_dim]`), normalised per channel with a mean and standard
deviation estimated from training data, and diffused. Samples are un-normalised, snapped to the
nearest code and decoded back to signals (`generator.snap_to_codes=False`: decoded as they are,
through the quantizer's output projection). The frozen tokenizer's variables and the latent
statistics are kept in the train state's `model_state` (never updated), so a generator
checkpoint alone is enough to sample. A KL-autoencoder workdir (the SD VAE imported by
`mmgen_jax.tools.import_sd_vae`) works the same way through `kl_tokenizer.FrozenKLAutoencoder`:
latents are posterior means and the normalisation is the fixed DiT scale (mean 0, std
1 / 0.18215) instead of data statistics. With `generator.cache_latents` the training split is
encoded once before the first step and batches are drawn from those latents
(`data/arrays.py`), which saves the encoder pass of every step on datasets that fit in memory.

Raw space: the DiT's own input space with nothing attached, for weights made elsewhere (the
official DiT checkpoints model Stable-Diffusion-VAE latents; `mmgen_jax.tools.import_dit`
writes such a workdir). Samples are returned as the model makes them, neither clipped nor
decoded.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmgen_jax import inference
from mmgen_jax.data import pipeline
from mmgen_jax.diffusion.gaussian import GaussianDiffusion, betas_for_schedule, space_timesteps
from mmgen_jax.diffusion.samplers import ddim_sample, ddpm_sample
from mmgen_jax.metrics import present
from mmgen_jax.models.dit import DiT
from mmgen_jax.models.vqvae import VQVAE
from mmgen_jax.sharding import host_array
from mmgen_jax.trainers import kl_tokenizer
from mmgen_jax.trainers.objective import Batch
from mmgen_jax.trainers.state import compute_dtype

logger = logging.getLogger(__name__)

TOKENIZER = "tokenizer"  # model_state collection holding the frozen tokenizer variables
LATENT_NORM = "latent_norm"  # model_state collection holding the per-channel mean / std
SAMPLERS = ("ddim", "ddpm")
SPACES = ("pixel", "latent", "raw")


def build_diffusion(config: ml_collections.ConfigDict) -> GaussianDiffusion:
    """The training diffusion process from the `diffusion` section of a config."""
    return GaussianDiffusion.from_betas(
        betas_for_schedule(config.diffusion.schedule, config.diffusion.num_timesteps),
        model_mean_type=config.diffusion.mean_type,
        learn_sigma=config.model.learn_sigma,
    )


def sampling_diffusion(diffusion: GaussianDiffusion, sampler: str, steps: int):
    """The process respaced to `steps` sampling steps ('ddimN' spacing for DDIM)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not one of {', '.join(SAMPLERS)}")
    if not 1 < steps <= diffusion.num_timesteps:
        raise ValueError(f"steps={steps} must be in [2, {diffusion.num_timesteps}]")
    if steps == diffusion.num_timesteps:
        return diffusion
    spacing = f"ddim{steps}" if sampler == "ddim" else [steps]
    return diffusion.respace(space_timesteps(diffusion.num_timesteps, spacing))


def check_sampling_request(
    labels, cfg_scale: float, num_classes: int, num_samples: int | None = None
) -> None:
    """Clear errors for labels out of range, a label count other than `num_samples` (when
    given) or guidance without conditioning (any generator with `num_classes` classes,
    0 = unconditional)."""
    if labels is not None:
        labels = np.asarray(labels)
        if not num_classes:
            raise ValueError("labels were given but the generator is unconditional")
        if num_samples is not None and len(labels) != num_samples:
            raise ValueError(f"{len(labels)} labels for num_samples={num_samples}")
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.size:
            raise ValueError(f"label {int(bad[0])} is outside the class range [0, {num_classes})")
    if cfg_scale != 1.0 and not num_classes:
        raise ValueError(
            f"cfg_scale={cfg_scale} needs a class-conditional generator; this one is "
            "unconditional (use cfg_scale=1)"
        )


class FrozenTokenizer:
    """A trained VQ-VAE restored from its workdir, used only for encoding and decoding."""

    latent_norm = None  # the generator estimates the latent statistics from data

    def __init__(self, workdir: str, snap_to_codes: bool = True):
        if not workdir:
            raise ValueError("generator.space='latent' needs generator.tokenizer_workdir")
        trainer = inference.load_config(workdir).trainer
        if trainer != "tokenizer":
            raise ValueError(
                f"generator.tokenizer_workdir={workdir!r} holds a {trainer!r} run, not a tokenizer"
            )
        run = inference.load_trained(workdir)
        self.workdir = workdir
        self.snap_to_codes = snap_to_codes
        self.model: VQVAE = run.objective.model
        self.variables = run.variables
        self.signal_shape = tuple(run.info["shape"])

    def encode(self, variables, x: jax.Array) -> jax.Array:
        """Signals [B, *S, C] -> code-space vectors [B, *S/f, code_dim] (no gradient)."""
        vectors = self.model.apply(variables, x, method=VQVAE.encode_to_code_vectors)
        return jax.lax.stop_gradient(vectors)

    def decode(self, variables, vectors: jax.Array) -> jax.Array:
        """Code-space vectors -> signals, snapping to the nearest code first unless the
        tokenizer was loaded with `snap_to_codes=False`."""
        return self.model.apply(
            variables, vectors, self.snap_to_codes, method=VQVAE.decode_code_vectors
        )

    def latent_shape(self) -> tuple[int, ...]:
        x = jax.ShapeDtypeStruct((1, *self.signal_shape), jnp.float32)
        return tuple(jax.eval_shape(functools.partial(self.encode, self.variables), x).shape[1:])


def load_frozen_tokenizer(workdir: str, snap_to_codes: bool = True):
    """The frozen tokenizer a workdir holds: an imported KL autoencoder or a trained VQ-VAE
    (whose decoding snaps latents to the nearest code unless `snap_to_codes=False`)."""
    if kl_tokenizer.is_kl_workdir(workdir):
        return kl_tokenizer.FrozenKLAutoencoder(workdir)
    return FrozenTokenizer(workdir, snap_to_codes)


def encode_all(tokenizer, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The tokenizer's latents of `images` [N, *S, C], encoded in batches: [N, *latent_shape]."""
    encode = jax.jit(functools.partial(tokenizer.encode, tokenizer.variables))
    return np.concatenate(
        [np.asarray(encode(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    )


def latent_statistics(
    tokenizer: FrozenTokenizer, data_config, split: str, max_examples: int
) -> dict[str, np.ndarray]:
    """Per-channel mean and std of the tokenizer's latents over (a prefix of) a split."""
    images = pipeline.load_split_numpy(data_config, split, max_examples)["image"]
    latents = encode_all(tokenizer, images)
    axes = tuple(range(latents.ndim - 1))
    return {
        "mean": latents.mean(axis=axes).astype(np.float32),
        "std": np.maximum(latents.std(axis=axes), 1e-6).astype(np.float32),
    }


class GeneratorObjective:
    """Trains a DiT with the Gaussian diffusion loss on pixels or tokenizer latents."""

    def __init__(self, config: ml_collections.ConfigDict, info: dict[str, Any]):
        generator = config.generator
        if generator.space not in SPACES:
            raise ValueError(f"generator.space={generator.space!r} is not one of {SPACES}")
        self.space = generator.space
        self.cache_latents = bool(generator.get("cache_latents", False))
        if self.cache_latents and self.space != "latent":
            raise ValueError(
                f"generator.cache_latents needs space='latent' (a tokenizer to encode with), "
                f"got space={self.space!r}"
            )
        self.data_config = config.data
        self.num_classes = int(info["num_classes"] or 0) if generator.class_conditional else 0
        self.info = info
        self.signal_shape = tuple(info["shape"])
        self.tokenizer = None
        self.latent_stats = None
        if self.space == "latent":
            self.tokenizer = load_frozen_tokenizer(
                generator.tokenizer_workdir, bool(generator.get("snap_to_codes", True))
            )
            if self.tokenizer.signal_shape != self.signal_shape:
                raise ValueError(
                    f"the tokenizer in {generator.tokenizer_workdir!r} takes signals of shape "
                    f"{self.tokenizer.signal_shape}, the dataset gives {self.signal_shape}"
                )
            self.latent_shape = self.tokenizer.latent_shape()
            self.latent_stats = self.tokenizer.latent_norm  # fixed (KL autoencoder) or None
            if self.latent_stats is None:  # estimated from the training data (VQ-VAE)
                self.latent_stats = latent_statistics(
                    self.tokenizer, config.data, config.data.train_split, generator.stats_examples
                )
        else:
            self.latent_shape = self.signal_shape
        model = config.model
        self.model = DiT(
            patch_size=tuple(model.patch_size)
            if not isinstance(model.patch_size, int)
            else model.patch_size,
            in_channels=self.latent_shape[-1],
            hidden_size=model.hidden_size,
            depth=model.depth,
            num_heads=model.num_heads,
            mlp_ratio=model.mlp_ratio,
            num_classes=self.num_classes,
            class_dropout_prob=model.class_dropout_prob,
            learn_sigma=model.learn_sigma,
            dtype=compute_dtype(config),
            remat=bool(model.get("remat", False)),
        )
        self.diffusion = build_diffusion(config)
        # 0 = the paper's uniform weighting of the epsilon MSE.
        self.min_snr_gamma = config.diffusion.get("min_snr_gamma", 0.0) or None
        self.sampling = config.sampling
        self.check_sampling_request(None, float(config.sampling.cfg_scale))
        self._samplers: dict[tuple, Any] = {}

    # -- latents ---------------------------------------------------------------------------

    def to_latent(self, model_state, x: jax.Array) -> jax.Array:
        """Signals [B, *S, C] -> normalised diffusion-space data [B, *latent_shape]."""
        if self.space in ("pixel", "raw"):
            return x
        return self.normalise(model_state, self.tokenizer.encode(model_state[TOKENIZER], x))

    def normalise(self, model_state, z: jax.Array) -> jax.Array:
        """Tokenizer latents [B, *latent_shape] -> diffusion-space data (per-channel norm)."""
        norm = model_state[LATENT_NORM]
        return (z - norm["mean"]) / norm["std"]

    def training_arrays(self) -> dict[str, np.ndarray] | None:
        """The training split's latents and labels, encoded once, when `generator.cache_latents`
        says so (the loop then draws batches from them); None: batches of signals."""
        if not self.cache_latents:
            return None
        split = pipeline.load_split_numpy(self.data_config, self.data_config.train_split)
        arrays = {"latent": encode_all(self.tokenizer, split["image"])}
        if "label" in split:
            arrays["label"] = split["label"]
        logger.info(
            "cached the latents of %d training examples (%.1f MB)",
            len(arrays["latent"]),
            arrays["latent"].nbytes / 2**20,
        )
        return arrays

    def to_signal(self, model_state, z: jax.Array) -> jax.Array:
        """Diffusion-space samples -> signals in [-1, 1] (decoded through the tokenizer)."""
        if self.space == "raw":
            return z
        if self.space == "pixel":
            return jnp.clip(z, -1.0, 1.0)
        norm = model_state[LATENT_NORM]
        signal = self.tokenizer.decode(model_state[TOKENIZER], z * norm["std"] + norm["mean"])
        return jnp.clip(signal, -1.0, 1.0)

    # -- objective protocol -------------------------------------------------------------------

    def init_variables(self, rng: jax.Array, batch: Batch) -> dict[str, Any]:
        z = jnp.zeros((1, *self.latent_shape), jnp.float32)
        y = jnp.zeros((1,), jnp.int32) if self.num_classes else None
        variables = dict(self.model.init({"params": rng}, z, jnp.zeros((1,), jnp.int32), y))
        return {**variables, **self.frozen_variables()}

    def frozen_variables(self) -> dict[str, Any]:
        """The never-trained part of `model_state`: the tokenizer and the latent statistics."""
        if self.space != "latent":
            return {}
        return {
            TOKENIZER: self.tokenizer.variables,
            LATENT_NORM: {k: jnp.asarray(v) for k, v in self.latent_stats.items()},
        }

    def _labels(self, batch: Batch):
        return batch["label"].astype(jnp.int32) if self.num_classes else None

    def _losses(self, params, model_state, batch, rng, train: bool) -> dict[str, jax.Array]:
        if "latent" in batch:  # cached (`training_arrays`)
            x0 = self.normalise(model_state, batch["latent"])  # [B, *latent_shape]
        else:
            x0 = self.to_latent(model_state, batch["image"])  # [B, *latent_shape]
        t_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
        t = self.diffusion.sample_timesteps(t_rng, x0.shape[0])
        noise = jax.random.normal(noise_rng, x0.shape, jnp.float32)

        def model_fn(x_t, timesteps, y):
            return self.model.apply(
                {"params": params},
                x_t,
                timesteps,
                y,
                train=train,
                rngs={"label_dropout": dropout_rng},
            )

        return self.diffusion.training_losses(
            model_fn, x0, t, noise, self._labels(batch), min_snr_gamma=self.min_snr_gamma
        )

    def loss(self, params, model_state, batch: Batch, rng: jax.Array):
        terms = self._losses(params, model_state, batch, rng, train=True)
        metrics = {name: jnp.mean(value) for name, value in terms.items() if name != "loss"}
        return jnp.mean(terms["loss"]), (model_state, metrics)

    def post_update(self, params, model_state):
        return params

    def eval_step(self, params, model_state, batch: Batch) -> dict[str, jax.Array]:
        # A fixed key: every evaluation scores the same timesteps and noise.
        terms = self._losses(params, model_state, batch, jax.random.PRNGKey(0), train=False)
        mask = batch["mask"]
        sums = {name: jnp.sum(value * mask) for name, value in terms.items()}
        sums["count"] = jnp.sum(mask)
        return sums

    def finalize_eval(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
        count = float(sums["count"])
        return {name: float(value) / count for name, value in sums.items() if name != "count"}

    def visualize(self, params, model_state, batch: Batch) -> dict[str, Any]:
        if self.space == "raw":  # nothing to decode the model's own space with
            return {}
        per_class = self.sampling.grid_per_class
        labels = np.repeat(np.arange(max(self.num_classes, 1)), per_class)
        samples = self.sample(
            params,
            model_state,
            labels if self.num_classes else None,
            jax.random.PRNGKey(0),
            num_samples=len(labels),
        )
        return {"samples": present.present(host_array(samples), per_class, self.info)}

    # -- sampling -----------------------------------------------------------------------------

    def sampling_settings(
        self,
        sampler: str | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        eta: float | None = None,
        cfg_channels: int | None = None,
    ) -> dict[str, Any]:
        """The sampler settings with every unset one taken from the config's `sampling` section,
        in the order `_sample` takes them."""
        sampling = self.sampling
        if cfg_channels is None:  # config value 0 (or absent) = guide every channel
            cfg_channels = sampling.get("cfg_channels", 0) or None
        return dict(
            sampler=sampler or sampling.sampler,
            steps=steps or sampling.steps,
            cfg_scale=float(sampling.cfg_scale if cfg_scale is None else cfg_scale),
            eta=float(sampling.eta if eta is None else eta),
            cfg_channels=cfg_channels,
        )

    def check_sampling_request(self, labels, cfg_scale: float, num_samples=None) -> None:
        """Clear errors for bad labels (range, count) or guidance without conditioning."""
        check_sampling_request(labels, cfg_scale, self.num_classes, num_samples)

    def sample(
        self,
        params,
        model_state,
        labels,
        rng: jax.Array,
        *,
        num_samples: int,
        sampler: str | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        eta: float | None = None,
        cfg_channels: int | None = None,
    ) -> jax.Array:
        """Generate `num_samples` signals [N, *S, C] in [-1, 1] (one jit-compiled loop).

        Unset settings come from the config's `sampling` section.
        """
        settings = self.sampling_settings(sampler, steps, cfg_scale, eta, cfg_channels)
        self.check_sampling_request(labels, settings["cfg_scale"], num_samples)
        # The tokenizer's snapping is traced into the sampler's decoding, so it is part of the key.
        snap = getattr(self.tokenizer, "snap_to_codes", None)
        key = (*settings.values(), num_samples, snap)
        if key not in self._samplers:
            self._samplers[key] = jax.jit(self.sampling_function(num_samples, **settings))
        y = None if labels is None else jnp.asarray(labels, jnp.int32)
        return self._samplers[key](params, model_state, y, rng)

    def sampling_function(
        self,
        num_samples: int,
        *,
        sampler: str,
        steps: int,
        cfg_scale: float,
        eta: float,
        cfg_channels: int | None,
    ):
        """The traceable `(params, model_state, labels, rng) -> signals [N, *S, C]` of these
        settings (as `sampling_settings` returns them), for callers that compile it into a
        larger function (e.g. sampling and scoring in one step)."""
        return functools.partial(
            self._sample, sampler, steps, cfg_scale, eta, cfg_channels, num_samples=num_samples
        )

    def _sample(
        self,
        sampler,
        steps,
        cfg_scale,
        eta,
        cfg_channels,
        params,
        model_state,
        y,
        rng,
        *,
        num_samples,
    ):
        diffusion = sampling_diffusion(self.diffusion, sampler, steps)

        def model_fn(x_t, timesteps, labels):
            return self.model.apply({"params": params}, x_t, timesteps, labels)

        shape = (num_samples, *self.latent_shape)
        common = dict(
            y=y,
            cfg_scale=cfg_scale,
            null_label=self.num_classes if y is not None else None,
            cfg_channels=cfg_channels,
        )
        if sampler == "ddim":
            z = ddim_sample(model_fn, diffusion, shape, rng, eta=eta, **common)
        else:
            z = ddpm_sample(model_fn, diffusion, shape, rng, **common)
        return self.to_signal(model_state, z)
