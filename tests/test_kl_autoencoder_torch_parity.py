"""Opt-in parity of `AutoencoderKL` with diffusers' `AutoencoderKL` (needs torch and diffusers).

Random diffusers models (norm scales and all biases perturbed too) are saved the way diffusers
saves them (`save_pretrained`: config.json with `.safetensors` or `.bin`, or a state_dict with
the old attention key names), imported with `mmgen_jax.tools.import_sd_vae`, and both sides
encode (posterior mean and log-variance) and decode (the mean) the same inputs: they must agree
to fp32 round-off. The full SD-VAE configuration runs once at 64x64, and once at 32x32 in
float64 on both sides, where the outputs must agree to float64 round-off: the remaining float32
differences are then rounding, not architecture. `pytest -s` prints every difference.

The PyTorch side runs in a subprocess (this file run as a script): importing diffusers after
TensorFlow, which the test session imports first, crashes the interpreter.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
if importlib.util.find_spec("diffusers") is None:  # not imported here: see the docstring
    pytest.skip("diffusers is not installed", allow_module_level=True)

SD_VAE = dict(
    block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32
)  # kl_autoencoder.SD_VAE_CONFIG, written out so the script side needs no mmgen_jax import
SMALL = dict(block_out_channels=[16, 32, 32], layers_per_block=2, norm_num_groups=8)
# name: (architecture, image size, how the weights are stored, compute dtype)
CASES = {
    "small_safetensors": (SMALL, 32, "safetensors", "float32"),
    "small_bin": (SMALL, 32, "bin", "float32"),
    "small_old_attention_keys": (SMALL, 16, "old_keys_npz", "float32"),
    "sd_vae": (SD_VAE, 64, "npz", "float32"),
    "sd_vae_float64": (SD_VAE, 32, "npz", "float64"),
}
OLD_ATTENTION_NAMES = {
    ".to_q.": ".query.",
    ".to_k.": ".key.",
    ".to_v.": ".value.",
    ".to_out.0.": ".proj_attn.",
}
# Max |difference| relative to the largest reference value. float32 round-off grows with depth:
# ~3e-6 for the small decoder, ~2e-5 for the SD-VAE decoder (32 convolutions of 512 channels).
RELATIVE_TOLERANCE = {"float32": 5e-5, "float64": 1e-11}

# ----------------------------------------------------------------------------------------------
# PyTorch side (subprocess)
# ----------------------------------------------------------------------------------------------


def write_reference(directory: str, name: str) -> None:
    """Save a random diffusers VAE (as CASES[name] says) plus inputs and its outputs."""
    import diffusers
    import torch

    architecture, size, storage, dtype = CASES[name]
    torch.manual_seed(sorted(CASES).index(name))
    levels = len(architecture["block_out_channels"])
    model = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=4,
        **architecture,
    ).eval()
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "norm" in parameter_name:
                parameter.add_(0.1 * torch.randn_like(parameter))
            elif parameter_name.endswith("bias"):
                parameter.copy_(0.05 * torch.randn_like(parameter))
    model = model.to(getattr(torch, dtype))  # float64 keeps the float32 values exactly
    weights = os.path.join(directory, "vae")
    if storage in ("safetensors", "bin"):
        model.save_pretrained(weights, safe_serialization=storage == "safetensors")
    else:
        state = {}
        for key, value in model.state_dict().items():
            if storage.startswith("old_keys"):
                for new, old in OLD_ATTENTION_NAMES.items():
                    key = key.replace(new, old)
            state[key] = value.numpy()
        np.savez(weights + ".npz", **state)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, size, size)).astype(dtype)
    with torch.no_grad():
        posterior = model.encode(torch.from_numpy(x)).latent_dist
        decoded = model.decode(posterior.mean).sample
    np.savez(
        os.path.join(directory, "reference.npz"),
        x=x,
        mean=posterior.mean.numpy(),
        logvar=posterior.logvar.numpy(),
        decode=decoded.numpy(),
    )


# ----------------------------------------------------------------------------------------------
# JAX side
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_imported_weights_match_diffusers(tmp_path, name):
    import jax

    from mmgen_jax.models.kl_autoencoder import SD_VAE_CONFIG, AutoencoderKL
    from mmgen_jax.tools import import_sd_vae

    architecture, _, storage, dtype = CASES[name]
    directory = str(tmp_path)
    subprocess.run([sys.executable, os.path.abspath(__file__), directory, name], check=True)
    reference = np.load(os.path.join(directory, "reference.npz"))
    if storage in ("safetensors", "bin"):  # a diffusers model directory, config.json included
        model_args, params, latent_scale, _ = import_sd_vae.convert(os.path.join(directory, "vae"))
        assert latent_scale == 0.18215
    else:  # a bare state_dict: the architecture is given
        model_args = {**SD_VAE_CONFIG, **architecture}
        model_args["block_out_channels"] = tuple(model_args["block_out_channels"])
        state = import_sd_vae.read_state_dict(os.path.join(directory, "vae.npz"))
        params = import_sd_vae.torch_to_flax_params(state, model=AutoencoderKL(**model_args))
    assert model_args["block_out_channels"] == tuple(architecture["block_out_channels"])
    assert model_args["norm_num_groups"] == architecture["norm_num_groups"]

    with jax.enable_x64(dtype == "float64"):
        model = AutoencoderKL(**model_args, dtype=dtype)
        variables = {"params": jax.tree.map(lambda p: np.asarray(p, dtype), params)}
        x = reference["x"].transpose(0, 2, 3, 1)
        mean, logvar = model.apply(variables, x, method="encode")
        decoded = model.apply(variables, mean, method="decode")
        ours = {"mean": mean, "logvar": logvar, "decode": decoded}
        for output, value in ours.items():
            assert value.dtype == dtype
            expected = reference[output]
            error = float(np.abs(np.asarray(value).transpose(0, 3, 1, 2) - expected).max())
            relative = error / float(np.abs(expected).max())
            print(f"{name} {output}: max |jax - diffusers| = {error:.3e} ({relative:.3e} of max)")
            assert relative < RELATIVE_TOLERANCE[dtype], (output, error, relative)


if __name__ == "__main__":
    write_reference(*sys.argv[1:])
