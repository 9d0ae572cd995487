"""Import the official PyTorch DiT weights (facebookresearch/DiT) into `mmgen_jax.models.dit.DiT`.

    python -m mmgen_jax.tools.import_dit --checkpoint DiT-XL-2-256x256.pt --model DiT-XL/2 \
        --image-size 256 --workdir DIR [--vae_workdir VAE_DIR]

writes DIR as a generator workdir that `python -m mmgen_jax.sample --workdir DIR` samples from
directly: `config.json` (the DiT, the paper's linear schedule and learned sigma, sampling
defaults of the official `sample.py`: 250 DDPM steps, guidance on the first 3 channels),
`dataset_info.json` (latent shape, 1000 classes) and a step-0 checkpoint whose parameters and
EMA parameters are the imported weights (the optimizer state is fresh, so training can continue
from it). Without `--vae_workdir` the generator works in 'raw' space: samples are SD-VAE latents
(`samples.npz`). With `--vae_workdir VAE_DIR` (an SD VAE imported by
`mmgen_jax.tools.import_sd_vae`) it works in 'latent' space through that VAE with the DiT latent
scale (diffusion latents = posterior mean * 0.18215; samples decode z / 0.18215), so the
sampler writes decoded pictures in [-1, 1]. `DIR/imported_dit.json` records the source files and
model arguments.
Reading (`load_state_dict`), converting (`torch_to_flax_params`, `load_torch_dit`) and writing
(`write_generator_workdir`) are separate steps so that other code can reuse the conversion.

The conversion is a fixed key map with layout changes only: Linear weights `[out, in]` become
kernels `[in, out]` and the patch-embedding Conv weight `[out, in, kh, kw]` becomes `[kh, kw,
in, out]`; token, head and patch orderings already agree (see `mmgen_jax.models.dit`). The
official `pos_embed` is a frozen buffer: it is checked against our fixed embedding, not copied.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util
from flax.core import meta

from mmgen_jax import config_lib
from mmgen_jax.models.dit import DiT, dit_config, sincos_pos_embed

POS_EMBED_KEY = "pos_embed"
# The official pos_embed is float32 computed in float64, so it matches ours to ~1e-7; the loose
# tolerance admits half-precision exports while still catching a wrong grid or axis order (O(1)).
POS_EMBED_TOLERANCE = 1e-3
# Latent diffusion setting of the released checkpoints: the SD VAE downsamples by 8 to 4 channels.
VAE_DOWNSAMPLING = 8
LATENT_CHANNELS = 4
IMAGENET_CLASSES = 1000


class Layout(enum.Enum):
    """How a PyTorch tensor is rearranged into its Flax parameter."""

    COPY = "copy"  # biases, embedding tables
    LINEAR = "linear"  # [out, in] -> [in, out]
    CONV = "conv"  # [out, in, *kernel] -> [*kernel, in, out]


def to_flax(layout: Layout, array: np.ndarray) -> np.ndarray:
    """A PyTorch tensor (numpy) rearranged into its Flax parameter's layout."""
    if layout is Layout.LINEAR:
        return array.T
    if layout is Layout.CONV:
        return array.transpose(*range(2, array.ndim), 1, 0)
    return array


def torch_shape(layout: Layout, flax_shape: Sequence[int]) -> tuple[int, ...]:
    """The PyTorch shape that maps onto a Flax parameter of `flax_shape`."""
    shape = tuple(flax_shape)
    if layout is Layout.LINEAR:
        return shape[::-1]
    if layout is Layout.CONV:
        return (shape[-1], shape[-2], *shape[:-2])
    return shape


def _linear(torch_name: str, flax_path: tuple[str, ...]) -> dict:
    return {
        f"{torch_name}.weight": (flax_path + ("kernel",), Layout.LINEAR),
        f"{torch_name}.bias": (flax_path + ("bias",), Layout.COPY),
    }


def param_map(depth: int, class_conditional: bool) -> dict[str, tuple[tuple[str, ...], Layout]]:
    """Official state_dict key -> (Flax parameter path, layout) for every trainable tensor."""
    entries = {
        "x_embedder.proj.weight": (("x_embedder", "proj", "kernel"), Layout.CONV),
        "x_embedder.proj.bias": (("x_embedder", "proj", "bias"), Layout.COPY),
        **_linear("t_embedder.mlp.0", ("t_embedder", "mlp_0")),
        **_linear("t_embedder.mlp.2", ("t_embedder", "mlp_2")),
        **_linear("final_layer.linear", ("final_layer", "linear")),
        **_linear("final_layer.adaLN_modulation.1", ("final_layer", "adaLN_modulation")),
    }
    if class_conditional:
        entries["y_embedder.embedding_table.weight"] = (
            ("y_embedder", "embedding_table"),
            Layout.COPY,
        )
    for index in range(depth):
        torch_block, flax_block = f"blocks.{index}", f"blocks_{index}"
        for torch_name, flax_path in (
            ("attn.qkv", ("attn", "qkv")),
            ("attn.proj", ("attn", "proj")),
            ("mlp.fc1", ("mlp", "fc1")),
            ("mlp.fc2", ("mlp", "fc2")),
            ("adaLN_modulation.1", ("adaLN_modulation",)),
        ):
            entries.update(_linear(f"{torch_block}.{torch_name}", (flax_block, *flax_path)))
    return entries


def _abstract_params(model: DiT, input_shape: Sequence[int]) -> dict[tuple[str, ...], Any]:
    """Flat {path: ShapeDtypeStruct} of the model's parameters, without allocating them."""
    x = jax.ShapeDtypeStruct((1, *input_shape, model.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.int32)
    y = jax.ShapeDtypeStruct((1,), jnp.int32) if model.num_classes else None
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t, y)
    return traverse_util.flatten_dict(meta.unbox(variables["params"]))


def _check_keys(state_dict: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected) - {POS_EMBED_KEY})
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {missing[:8]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {unexpected[:8]}")
    if problems:
        raise ValueError(
            "state_dict does not match the official DiT layout for this model: "
            + "; ".join(problems)
        )


def _check_pos_embed(state_dict: Mapping[str, Any], hidden_size: int, grid: Sequence[int]):
    """The checkpoint's frozen pos_embed [1, N, D] must be our fixed embedding (not imported)."""
    if POS_EMBED_KEY not in state_dict:
        return
    stored = np.asarray(state_dict[POS_EMBED_KEY], np.float32)
    ours = sincos_pos_embed(hidden_size, grid)[None]
    if stored.shape != ours.shape:
        raise ValueError(
            f"state_dict[{POS_EMBED_KEY!r}] has shape {stored.shape} but the model expects "
            f"{ours.shape} (token grid {tuple(grid)}, hidden {hidden_size})"
        )
    difference = float(np.max(np.abs(stored - ours)))
    if difference > POS_EMBED_TOLERANCE:
        raise ValueError(
            f"state_dict[{POS_EMBED_KEY!r}] differs from the fixed sin-cos embedding by up to "
            f"{difference:.3g}: the checkpoint uses another position embedding or grid"
        )


def torch_to_flax_params(
    state_dict: Mapping[str, np.ndarray], *, model: DiT, input_shape: Sequence[int]
) -> dict[str, Any]:
    """Map an official DiT state_dict onto the parameters of `model` (fp32 numpy arrays).

    Args:
      state_dict: official key -> array (numpy, or anything `np.asarray` takes).
      model: the `DiT` to fill; its depth, width and label setting fix the expected keys.
      input_shape: spatial shape of the model's input, e.g. (32, 32) for 256px latents; it fixes
        the token grid against which `pos_embed` is checked.

    Raises:
      ValueError naming the keys on missing or unexpected keys, and naming the key and both
      shapes on any shape mismatch.
    """
    expected_shapes = _abstract_params(model, input_shape)
    mapping = param_map(model.depth, bool(model.num_classes))
    _check_keys(state_dict, mapping)
    flat = {}
    for key, (path, layout) in mapping.items():
        array = np.asarray(state_dict[key], dtype=np.float32)
        expected = expected_shapes[path].shape
        if array.shape != torch_shape(layout, expected):
            raise ValueError(
                f"state_dict[{key!r}] has shape {array.shape} but the model expects "
                f"{torch_shape(layout, expected)} (Flax {'/'.join(path)} of shape {expected})"
            )
        flat[path] = np.ascontiguousarray(to_flax(layout, array))
    patch = expected_shapes[("x_embedder", "proj", "kernel")].shape[:-2]
    grid = [size // p for size, p in zip(input_shape, patch, strict=True)]
    _check_pos_embed(state_dict, model.hidden_size, grid)
    return traverse_util.unflatten_dict(flat)


def model_from_args(model_args: Mapping[str, Any]) -> DiT:
    """The `DiT` described by `load_torch_dit` keyword arguments (e.g. the saved JSON's
    'model_args'); `input_size` is dropped since the model reads its input shape from x."""
    return DiT(**{key: value for key, value in model_args.items() if key != "input_size"})


def load_torch_dit(
    state_dict: Mapping[str, np.ndarray],
    *,
    input_size: int | Sequence[int],
    patch_size: int,
    in_channels: int,
    hidden_size: int,
    depth: int,
    num_heads: int,
    num_classes: int,
    learn_sigma: bool = True,
    class_dropout_prob: float = 0.1,
) -> tuple[DiT, dict[str, Any]]:
    """Build the `DiT` matching an official checkpoint and return `(model, variables)`.

    `model.apply(variables, x, t, y)` takes channels-last x [B, H, W, in_channels], timesteps t
    [B] in 0..999 and labels y [B] (num_classes = null class) and returns [B, H, W, out] exactly
    as the official `DiT.forward` (eval mode) returns [B, out, H, W]. `variables['params']` holds
    plain fp32 numpy arrays; re-box them with `flax.core.meta.replace_boxed` on an abstract
    `model.init` tree if logical-axis metadata is needed.
    """
    input_shape = (input_size,) * 2 if isinstance(input_size, int) else tuple(input_size)
    model = DiT(
        patch_size=patch_size,
        in_channels=in_channels,
        hidden_size=hidden_size,
        depth=depth,
        num_heads=num_heads,
        num_classes=num_classes,
        class_dropout_prob=class_dropout_prob,
        learn_sigma=learn_sigma,
    )
    params = torch_to_flax_params(state_dict, model=model, input_shape=input_shape)
    return model, {"params": params}


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a state_dict from `.npz`, `.safetensors` or `.pt`/`.pth` as {key: numpy array}.

    A `.pt` training checkpoint holding {'model', 'ema', ...} yields its 'ema' weights (what the
    official sampler uses), else its 'model' weights.
    """
    extension = os.path.splitext(path)[1].lower()
    if extension == ".npz":
        with np.load(path) as archive:
            return {key: archive[key] for key in archive.files}
    if extension == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ImportError(
                f"reading {path} needs the safetensors package: pip install safetensors"
            ) from None
        return dict(load_file(path))
    if extension in (".pt", ".pth"):
        return load_torch_file(path)
    raise ValueError(
        f"{path}: unknown checkpoint format {extension!r}; use .npz, .safetensors, .pt"
    )


def load_torch_file(path: str) -> dict[str, np.ndarray]:
    """Read a PyTorch pickle (any suffix) with `weights_only=True` as {key: numpy array}; a
    training checkpoint holding {'model', 'ema', ...} yields its 'ema' (else 'model') weights."""
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading {path} needs PyTorch (pip install torch, the CPU wheel is enough), or "
            "convert the checkpoint to .npz or .safetensors first"
        ) from None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("ema", "model"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
            break
    # .float() first: numpy has no bfloat16.
    return {
        key: (value.float() if value.is_floating_point() else value).numpy()
        for key, value in checkpoint.items()
    }


def convert_checkpoint(
    path: str, model_name: str, image_size: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and convert a released ImageNet latent DiT: returns (model_args, variables).

    `model_args` are the keyword arguments of `load_torch_dit` (latent size image_size / 8,
    4 latent channels, 1000 classes, learned sigma).
    """
    if image_size % VAE_DOWNSAMPLING:
        raise ValueError(f"--image-size {image_size} is not a multiple of {VAE_DOWNSAMPLING}")
    model_args = {
        **dit_config(model_name),
        "input_size": image_size // VAE_DOWNSAMPLING,
        "in_channels": LATENT_CHANNELS,
        "num_classes": IMAGENET_CLASSES,
        "learn_sigma": True,
        "class_dropout_prob": 0.1,
    }
    _, variables = load_torch_dit(load_state_dict(path), **model_args)
    return model_args, variables


def generator_config(
    model_args: Mapping[str, Any], vae_workdir: str | None = None
) -> ml_collections.ConfigDict:
    """A generator config (same sections as `configs/dit.py`) for the imported model: in 'raw'
    space, or in 'latent' space through the KL autoencoder in `vae_workdir`."""
    config = config_lib.base_config()
    config.trainer = "generator"
    config.name = "imported_dit"
    config.data.name = "imagenet2012"  # what the official model was trained on (as latents)
    config.generator = dict(
        space="latent" if vae_workdir else "raw",
        tokenizer_workdir=os.path.abspath(vae_workdir) if vae_workdir else "",
        class_conditional=True,
        stats_examples=0,
        cache_latents=False,
        snap_to_codes=True,  # unused: a KL autoencoder has no codebook
    )
    config.model = dict(
        patch_size=model_args["patch_size"],
        hidden_size=model_args["hidden_size"],
        depth=model_args["depth"],
        num_heads=model_args["num_heads"],
        mlp_ratio=4.0,
        class_dropout_prob=model_args["class_dropout_prob"],
        learn_sigma=model_args["learn_sigma"],
        remat=False,
    )
    config.diffusion = dict(
        num_timesteps=1000, schedule="linear", mean_type="epsilon", min_snr_gamma=0.0
    )
    config.sampling = dict(
        sampler="ddpm", steps=250, eta=0.0, cfg_scale=1.5, cfg_channels=3, grid_per_class=1
    )
    config.optimizer.learning_rate = 1e-4  # the paper's constant AdamW rate
    config.optimizer.weight_decay = 0.0
    config.training.global_batch_size = 256
    config.training.ema_decay = 0.9999
    return config.lock()


def attach_vae(
    config: ml_collections.ConfigDict, info: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(dataset info, model_state) of a DiT whose latents `info['shape']` decode through the KL
    autoencoder at `config.generator.tokenizer_workdir`: the info describes the VAE's signals,
    the model_state holds the frozen VAE and the fixed latent scale."""
    from mmgen_jax.trainers import kl_tokenizer
    from mmgen_jax.trainers.generator import GeneratorObjective

    vae_workdir = config.generator.tokenizer_workdir
    signal_shape = tuple(kl_tokenizer.read_manifest(vae_workdir)["signal_shape"])
    signal_info = {**info, "shape": signal_shape}
    objective = GeneratorObjective(config, signal_info)
    if objective.latent_shape != tuple(info["shape"]):
        raise ValueError(
            f"the VAE in {vae_workdir} maps signals {signal_shape} to latents "
            f"{objective.latent_shape}, but the DiT takes {tuple(info['shape'])}: import the "
            "VAE with the DiT's --image-size"
        )
    return signal_info, objective.frozen_variables()


def write_generator_workdir(
    workdir: str,
    model_args: Mapping[str, Any],
    variables: Mapping[str, Any],
    provenance: Mapping[str, Any],
    vae_workdir: str | None = None,
) -> ml_collections.ConfigDict:
    """Write `workdir` as a generator run holding the imported weights at step 0 (see the module
    docstring), decoding through the KL autoencoder in `vae_workdir` if given; an existing
    checkpoint there is an error rather than silently replaced."""
    from mmgen_jax import checkpoint as checkpoint_lib
    from mmgen_jax import run_files
    from mmgen_jax.trainers.state import create_train_state, make_optimizer

    workdir = os.path.abspath(workdir)
    config = generator_config(model_args, vae_workdir)
    checkpointer = checkpoint_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"), async_save=False
    )
    try:
        if checkpointer.latest_step() is not None:
            raise FileExistsError(
                f"{checkpointer.directory} already holds a checkpoint; import into a new workdir"
            )
        size = model_args["input_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        info = {
            "shape": (*size, model_args["in_channels"]),
            "num_classes": model_args["num_classes"],
            "num_examples": {},
        }
        model_state = {}
        if vae_workdir:
            info, model_state = attach_vae(config, info)
        tx, _ = make_optimizer(config.optimizer, config.training.total_steps)
        params = jax.tree.map(jnp.asarray, dict(variables["params"]))
        state = create_train_state(params, model_state, tx, jax.random.PRNGKey(config.seed))
        run_files.write(workdir, config, info)
        checkpointer.save(0, state, meta={"imported_from": dict(provenance)})
        checkpointer.wait()
    finally:
        checkpointer.close()
    with open(os.path.join(workdir, "imported_dit.json"), "w") as file:
        json.dump({**provenance, "model_args": dict(model_args)}, file, indent=2, sort_keys=True)
    return config


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: read, convert and save an official DiT checkpoint (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help=".pt/.pth, .safetensors or .npz")
    parser.add_argument("--model", required=True, help="zoo name, e.g. DiT-XL/2")
    parser.add_argument("--image-size", type=int, required=True, help="pixels, e.g. 256")
    parser.add_argument("--workdir", required=True)
    parser.add_argument(
        "--vae_workdir", default=None, help="SD VAE imported by mmgen_jax.tools.import_sd_vae"
    )
    args = parser.parse_args(argv)
    model_args, variables = convert_checkpoint(args.checkpoint, args.model, args.image_size)
    metadata = {
        "model": args.model,
        "image_size": args.image_size,
        "checkpoint": os.path.abspath(args.checkpoint),
    }
    if args.vae_workdir:
        metadata["vae_workdir"] = os.path.abspath(args.vae_workdir)
    write_generator_workdir(args.workdir, model_args, variables, metadata, args.vae_workdir)
    print(
        f"imported {args.model} from {args.checkpoint} into {args.workdir}; sample with\n"
        f"  python -m mmgen_jax.sample --workdir {args.workdir} --num_samples 8"
    )


if __name__ == "__main__":
    main()
