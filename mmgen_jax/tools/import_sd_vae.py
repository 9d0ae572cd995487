"""Import the Stable Diffusion VAE (diffusers `AutoencoderKL` weights) into
`mmgen_jax.models.kl_autoencoder.AutoencoderKL`.

    python -m mmgen_jax.tools.import_sd_vae --weights sd-vae-ft-ema/ --workdir DIR \
        [--image-size 256] [--config config.json]

`--weights` is `diffusion_pytorch_model.safetensors` (read with the safetensors numpy API, no
torch needed), `diffusion_pytorch_model.bin` (a PyTorch pickle, read with
`torch.load(weights_only=True)`), an `.npz`, or the directory holding one of them, as a
Hugging Face snapshot of `stabilityai/sd-vae-ft-ema` or `sd-vae-ft-mse` does. The architecture
comes from the diffusers `config.json` beside the weights (or `--config`), else it is the SD VAE
(`SD_VAE_CONFIG`). DIR becomes a KL-autoencoder workdir (`mmgen_jax.trainers.kl_tokenizer`)
that a generator uses as `generator.tokenizer_workdir` and that `import_dit --vae_workdir` attaches
to an imported DiT. Nothing is downloaded.

The conversion maps keys by rule, since our module names mirror diffusers' (see
`mmgen_jax.models.kl_autoencoder`): `encoder/down_blocks_0_resnets_1/conv1/kernel` is
`encoder.down_blocks.0.resnets.1.conv1.weight`, GroupNorm `scale` is `weight`, the attention
output `to_out` is `to_out.0`. Layouts: convolutions `[out, in, kh, kw]` -> `[kh, kw, in, out]`;
Linear `[out, in]` and 1x1 convolutions `[out, in, 1, 1]` (`quant_conv`, `post_quant_conv`)
-> Dense kernels `[in, out]`. Checkpoints saved by older diffusers name the attention
projections `query`, `key`, `value`, `proj_attn`, possibly as 1x1 convolutions; both layouts
are accepted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flax import traverse_util

from mmgen_jax.models.kl_autoencoder import SD_VAE_CONFIG, SD_VAE_SCALE, AutoencoderKL
from mmgen_jax.tools.import_dit import Layout, load_state_dict, load_torch_file, to_flax
from mmgen_jax.trainers import kl_tokenizer

# Weight files of a diffusers model directory, in order of preference.
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DIFFUSERS_CONFIG_FILE = "config.json"
# Older diffusers attention names -> current ones (as `_convert_deprecated_attention_blocks`).
LEGACY_ATTENTION_NAMES = {
    "query": "to_q",
    "key": "to_k",
    "value": "to_v",
    "proj_attn": "to_out.0",
}
# diffusers config values the Flax model implements; anything else is another architecture.
SUPPORTED_DIFFUSERS_CONFIG = {
    "act_fn": "silu",
    "mid_block_add_attention": True,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
}


def torch_key(flax_path: Sequence[str]) -> str:
    """The diffusers state_dict key of a Flax parameter path (module names mirror diffusers)."""
    parts = []
    for name in flax_path[:-1]:
        # down_blocks_0_resnets_1 -> down_blocks.0.resnets.1 (and to_out -> to_out.0).
        name = re.sub(r"_(\d+)(_|$)", lambda match: f".{match[1]}{'.' if match[2] else ''}", name)
        parts.append("to_out.0" if name == "to_out" else name)
    leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[flax_path[-1]]
    return ".".join([*parts, leaf])


def _layout(flax_path: Sequence[str], ndim: int) -> Layout:
    if flax_path[-1] != "kernel":
        return Layout.COPY
    return Layout.LINEAR if ndim == 2 else Layout.CONV


def modernize_keys(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Rename old attention keys (`query`, ..., `proj_attn`) to the current ones and squeeze
    attention weights stored as 1x1 convolutions `[out, in, 1, 1]` to `[out, in]`."""
    result = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if ".attentions." in key and len(parts) >= 2 and parts[-2] in LEGACY_ATTENTION_NAMES:
            key = ".".join([*parts[:-2], LEGACY_ATTENTION_NAMES[parts[-2]], parts[-1]])
        value = np.asarray(value)
        if ".attentions." in key and value.ndim == 4 and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0]
        result[key] = value
    return result


def check_is_autoencoder(state_dict: Mapping[str, Any], source: str) -> None:
    """A clear error when `source` holds some other model (a DiT, a UNet, a CompVis checkpoint)."""
    keys = sorted(state_dict)
    if any(key.startswith("encoder.down_blocks.") for key in keys) and any(
        key.startswith("decoder.up_blocks.") for key in keys
    ):
        return
    hint = ""
    if any(key.startswith(("encoder.down.", "first_stage_model.")) for key in keys):
        hint = (
            " It looks like an original CompVis/ldm checkpoint; use the diffusers layout "
            "(e.g. the stabilityai/sd-vae-ft-ema files) or convert it with diffusers first."
        )
    raise ValueError(
        f"{source} does not hold a diffusers AutoencoderKL state_dict (no 'encoder.down_blocks.*'"
        f" / 'decoder.up_blocks.*' keys among its {len(keys)} keys, e.g. {keys[:4]}).{hint}"
    )


def torch_to_flax_params(
    state_dict: Mapping[str, Any], *, model: AutoencoderKL, source: str = "state_dict"
) -> dict[str, Any]:
    """Map a diffusers AutoencoderKL state_dict onto `model`'s 2-D parameters (float32 numpy).

    Raises:
      ValueError naming the keys on missing or unexpected keys, naming the key and both shapes
      on a shape mismatch, and saying so when `source` is not an autoencoder at all.
    """
    check_is_autoencoder(state_dict, source)
    state_dict = modernize_keys(state_dict)
    expected = kl_tokenizer.abstract_params(model, ndim=2)
    mapping = {torch_key(path): path for path in expected}
    missing = sorted(set(mapping) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(mapping))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match AutoencoderKL({_describe(model)}): "
            f"{len(missing)} missing keys {missing[:8]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:8]}"
        )
    flat = {}
    for key, path in mapping.items():
        array = np.asarray(state_dict[key], np.float32)
        shape = expected[path].shape
        layout = _layout(path, len(shape))
        if layout is Layout.LINEAR and array.ndim == 4 and array.shape[2:] == (1, 1):
            array = array[:, :, 0, 0]  # quant_conv / post_quant_conv: 1x1 conv -> Dense
        converted = to_flax(layout, array)
        if converted.shape != shape:
            raise ValueError(
                f"{source}[{key!r}] has shape {array.shape} but AutoencoderKL("
                f"{_describe(model)}) expects {shape} for Flax {'/'.join(path)} (converted: "
                f"{converted.shape})"
            )
        flat[path] = np.ascontiguousarray(converted)
    return traverse_util.unflatten_dict(flat)


def _describe(model: AutoencoderKL) -> str:
    return ", ".join(f"{name}={getattr(model, name)}" for name in SD_VAE_CONFIG)


def model_args_from_diffusers_config(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """`AutoencoderKL` arguments from a diffusers `config.json`; other architectures (other
    block types, activations, no mid attention, no quant convs) are an error naming the field."""
    for name, value in SUPPORTED_DIFFUSERS_CONFIG.items():
        if config.get(name, value) != value:
            raise ValueError(f"{source}: {name}={config[name]!r} is not supported (needs {value})")
    for name, block in (
        ("down_block_types", "DownEncoderBlock2D"),
        ("up_block_types", "UpDecoderBlock2D"),
    ):
        types = set(config.get(name, [block]))
        if types != {block}:
            raise ValueError(f"{source}: {name}={sorted(types)} is not supported (needs {block})")
    args = {name: config.get(name, default) for name, default in SD_VAE_CONFIG.items()}
    args["block_out_channels"] = tuple(args["block_out_channels"])
    return args


def locate_weights(path: str) -> tuple[str, str | None]:
    """(weight file, diffusers config.json beside it or None) for a file or model directory."""
    if os.path.isdir(path):
        candidates = [os.path.join(path, name) for name in WEIGHT_FILES]
        found = [candidate for candidate in candidates if os.path.exists(candidate)]
        if not found:
            raise FileNotFoundError(
                f"{path} holds none of {', '.join(WEIGHT_FILES)}: put the diffusers weights of "
                "stabilityai/sd-vae-ft-ema (or -mse) there, or pass the weight file itself"
            )
        path = found[0]
    elif not os.path.exists(path):
        raise FileNotFoundError(
            f"VAE weight file {path} does not exist: download diffusion_pytorch_model.safetensors "
            "of stabilityai/sd-vae-ft-ema (or -mse) and pass its path (nothing is downloaded here)"
        )
    config = os.path.join(os.path.dirname(os.path.abspath(path)), DIFFUSERS_CONFIG_FILE)
    return path, config if os.path.exists(config) else None


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """{key: array} from `.safetensors`, `.npz`, or a PyTorch pickle (`.bin`, `.pt`, `.pth`)."""
    if os.path.splitext(path)[1].lower() == ".bin":
        return load_torch_file(path)
    return load_state_dict(path)


def convert(
    weights: str, config_path: str | None = None
) -> tuple[dict[str, Any], dict[str, Any], float, dict[str, Any]]:
    """Read and convert: (model_args, params, latent_scale, provenance)."""
    weight_file, found_config = locate_weights(weights)
    config_path = config_path or found_config
    model_args, latent_scale = dict(SD_VAE_CONFIG), SD_VAE_SCALE
    if config_path:
        with open(config_path) as file:
            diffusers_config = json.load(file)
        model_args = model_args_from_diffusers_config(diffusers_config, config_path)
        latent_scale = float(diffusers_config.get("scaling_factor", SD_VAE_SCALE))
    model = AutoencoderKL(**model_args)
    params = torch_to_flax_params(read_state_dict(weight_file), model=model, source=weight_file)
    provenance = {
        "weights": os.path.abspath(weight_file),
        "config": os.path.abspath(config_path) if config_path else None,
    }
    return model_args, params, latent_scale, provenance


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: read, convert and save diffusers AutoencoderKL weights (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True, help="weight file or diffusers model dir")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--image-size", type=int, default=256, help="pixels of the signals")
    parser.add_argument("--config", default=None, help="diffusers config.json of the VAE")
    args = parser.parse_args(argv)
    model_args, params, latent_scale, provenance = convert(args.weights, args.config)
    factor = AutoencoderKL(**model_args).downsampling_factor
    if args.image_size % factor:
        raise ValueError(f"--image-size {args.image_size} is not a multiple of {factor}")
    kl_tokenizer.write_workdir(
        args.workdir,
        model_args,
        params,
        signal_shape=(args.image_size, args.image_size, model_args["in_channels"]),
        latent_scale=latent_scale,
        provenance=provenance,
    )
    print(
        f"imported the KL autoencoder {provenance['weights']} into {args.workdir}; attach it to "
        f"an imported DiT with\n  python -m mmgen_jax.tools.import_dit ... --vae_workdir "
        f"{args.workdir}"
    )


if __name__ == "__main__":
    main()
