"""A KL autoencoder (the SD VAE) as the generator's frozen tokenizer, and the workdir holding it.

A KL-autoencoder workdir (written by `mmgen_jax.tools.import_sd_vae`) holds two files:

  kl_autoencoder.json         the `AutoencoderKL` arguments, the signal shape it serves, the
                              latent scale and where the weights came from;
  kl_autoencoder_params.npz   the parameters, one float32 array per '/'-joined Flax path.

The parameters are a plain `.npz` rather than an Orbax checkpoint: they are frozen and
replicated, so sharded or asynchronous saving brings nothing, and `np.load` reads the 84M
SD-VAE parameters (335 MB) in 0.4 s on a 2-core CPU with neither jax nor orbax involved (2.5 s
for the whole `FrozenKLAutoencoder`, with the shape checks and the copy to the device). A
generator trained on top keeps its own copy in its checkpoint's `model_state`.

`FrozenKLAutoencoder` has the interface of `generator.FrozenTokenizer`: `encode` gives the
posterior *mean* (deterministic, so a batch always maps to the same latents; the DiT training
script draws a posterior sample instead, a difference of the posterior's small std), `decode`
gives signals, and `latent_norm` fixes the generator's latent normalisation to the DiT
convention: mean 0 and std 1 / `latent_scale`, i.e. diffusion runs on `mean * 0.18215` and
samples decode `z / 0.18215`, instead of statistics estimated from data.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.core import meta

from mmgen_jax.models.kl_autoencoder import AutoencoderKL, decode_in_chunks

MANIFEST_FILE = "kl_autoencoder.json"
PARAMS_FILE = "kl_autoencoder_params.npz"
DECODE_PER_DEVICE = 32  # latents decoded at once per device (see FrozenKLAutoencoder.decode)


def is_kl_workdir(workdir: str) -> bool:
    """Whether `workdir` holds an imported KL autoencoder (rather than a trained run)."""
    return bool(workdir) and os.path.exists(os.path.join(workdir, MANIFEST_FILE))


@functools.lru_cache(maxsize=8)  # tracing the model takes ~0.5 s; the shapes never change
def abstract_params(model: AutoencoderKL, ndim: int = 2) -> dict[tuple[str, ...], Any]:
    """Flat {path: ShapeDtypeStruct} of the model's parameters for `ndim` spatial axes (do not
    modify the returned dict: it is cached)."""
    x = jax.ShapeDtypeStruct((1, *(model.downsampling_factor,) * ndim, model.in_channels), "f4")
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    return traverse_util.flatten_dict(meta.unbox(variables["params"]))


def write_workdir(
    workdir: str,
    model_args: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    signal_shape: Sequence[int],
    latent_scale: float,
    provenance: Mapping[str, Any],
) -> None:
    """Write the two files; an existing KL workdir there is an error, not silently replaced."""
    if is_kl_workdir(workdir):
        raise FileExistsError(
            f"{os.path.join(workdir, MANIFEST_FILE)} exists; import into a new workdir"
        )
    os.makedirs(workdir, exist_ok=True)
    flat = traverse_util.flatten_dict(dict(params))
    arrays = {"/".join(path): np.asarray(value, np.float32) for path, value in flat.items()}
    np.savez(os.path.join(workdir, PARAMS_FILE), **arrays)
    manifest = {
        "model_args": {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in model_args.items()
        },
        "signal_shape": [int(size) for size in signal_shape],
        "latent_scale": float(latent_scale),
        "imported_from": dict(provenance),
    }
    # The manifest last: its presence marks a complete workdir.
    with open(os.path.join(workdir, MANIFEST_FILE), "w") as file:
        json.dump(manifest, file, indent=2, sort_keys=True)


def read_manifest(workdir: str) -> dict[str, Any]:
    """The workdir's `kl_autoencoder.json` (model arguments, signal shape, latent scale)."""
    manifest_path = os.path.join(workdir, MANIFEST_FILE)
    if not os.path.exists(manifest_path):
        raise FileNotFoundError(
            f"{manifest_path} does not exist: {workdir!r} is not a KL-autoencoder workdir "
            "(write one with python -m mmgen_jax.tools.import_sd_vae)"
        )
    with open(manifest_path) as file:
        return json.load(file)


def load_workdir(workdir: str) -> tuple[AutoencoderKL, dict[str, Any], dict[str, Any]]:
    """(model, params, manifest) of a KL-autoencoder workdir; the parameters are checked against
    the model's (every path present with its shape, nothing extra)."""
    manifest = read_manifest(workdir)
    manifest_path = os.path.join(workdir, MANIFEST_FILE)
    args = manifest["model_args"]
    model = AutoencoderKL(
        **{key: tuple(value) if isinstance(value, list) else value for key, value in args.items()}
    )
    params_path = os.path.join(workdir, PARAMS_FILE)
    if not os.path.exists(params_path):
        raise FileNotFoundError(f"{params_path} is missing (the workdir is incomplete)")
    with np.load(params_path) as archive:
        flat = {tuple(key.split("/")): archive[key] for key in archive.files}
    expected = abstract_params(model)
    if set(flat) != set(expected):
        missing = sorted("/".join(path) for path in set(expected) - set(flat))
        extra = sorted("/".join(path) for path in set(flat) - set(expected))
        raise ValueError(
            f"{params_path} does not hold the parameters of {manifest_path}'s model: "
            f"missing {missing[:8]}, unexpected {extra[:8]}"
        )
    for path, value in flat.items():
        if value.shape != expected[path].shape:
            raise ValueError(
                f"{params_path}: {'/'.join(path)} has shape {value.shape}, the model expects "
                f"{expected[path].shape}"
            )
    return model, traverse_util.unflatten_dict(flat), manifest


class FrozenKLAutoencoder:
    """An imported KL autoencoder, used only for encoding and decoding (see module docstring).

    Attributes:
      model: the `AutoencoderKL`.
      variables: {'params': ...} as device arrays.
      signal_shape: per-example signal shape [*S, C] it was imported for (e.g. (256, 256, 3)).
      latent_norm: {'mean': [latent], 'std': [latent]} the generator normalises latents with.
      decode_batch: latents decoded at once (None: `DECODE_PER_DEVICE` per device).
    """

    def __init__(self, workdir: str, decode_batch: int | None = None):
        model, params, manifest = load_workdir(workdir)
        self.decode_batch = decode_batch
        self.workdir = workdir
        self.model = model
        self.variables = {"params": jax.tree.map(jnp.asarray, params)}
        self.signal_shape = tuple(manifest["signal_shape"])
        self.latent_scale = float(manifest["latent_scale"])
        channels = model.latent_channels
        self.latent_norm = {
            "mean": np.zeros(channels, np.float32),
            "std": np.full(channels, 1.0 / self.latent_scale, np.float32),
        }

    def encode(self, variables, x: jax.Array) -> jax.Array:
        """Signals [B, *S, C] in [-1, 1] -> posterior means [B, *S/f, latent] (no gradient)."""
        mean, _ = self.model.apply(variables, x, method=AutoencoderKL.encode)
        return jax.lax.stop_gradient(mean)

    def decode(self, variables, z: jax.Array) -> jax.Array:
        """Latents [B, *S/f, latent] (unscaled) -> signals [B, *S, C], not clipped; at most
        `decode_batch` at once (`kl_autoencoder.decode_in_chunks`: bounded memory)."""
        chunk = self.decode_batch or DECODE_PER_DEVICE * jax.device_count()
        return decode_in_chunks(self.model, variables, z, chunk)

    def latent_shape(self) -> tuple[int, ...]:
        x = jax.ShapeDtypeStruct((1, *self.signal_shape), jnp.float32)
        return tuple(jax.eval_shape(functools.partial(self.encode, self.variables), x).shape[1:])
