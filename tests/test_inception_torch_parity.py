"""Opt-in parity of `mmgen_jax.metrics.inception` with pytorch-fid's FID InceptionV3 (needs torch).

pytorch-fid's own `fid_inception_v3()` builds the network; its weight download is replaced by a
random state dict (no network), whose BatchNorm statistics are measured on random images so that
activations stay O(1) through all 94 layers, and whose BatchNorm scales and offsets are random.
The same state dict goes through `torch_to_flax_variables`; pool features, logits (with and
without the classifier bias) and ADM's spatial features must then agree to fp32 round-off, with
pytorch-fid's own resizing and scaling in front (`InceptionV3(resize_input, normalize_input)`).

The PyTorch side runs in a subprocess (this file run as a script): importing torchvision after
TensorFlow, which the test session imports first, crashes the interpreter.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("pytorch_fid") is None:  # not imported here: see the docstring
    pytest.skip("pytorch_fid is not installed", allow_module_level=True)

# fp32 through ~94 conv layers: differences stay a few ulps of the largest activation.
RELATIVE_TOLERANCE = 1e-4
FEATURES = ("pool", "logits", "logits_unbiased", "spatial")
UNIT_SIZES = (299, 256, 331)  # no resize, upsampling, downsampling


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    inputs = {
        f"unit_{size}": rng.uniform(0.0, 1.0, (2, size, size, 3)).astype(np.float32)
        for size in UNIT_SIZES
    }
    inputs["uint8_64"] = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    inputs["resize_37x300"] = rng.uniform(size=(2, 37, 300, 3)).astype(np.float32)
    return inputs


# ----------------------------------------------------------------------------------------------
# PyTorch side (subprocess)
# ----------------------------------------------------------------------------------------------


def _random_state_dict(seed: int) -> dict:
    """A random state dict for FIDInceptionV3 with BatchNorm statistics of real activations."""
    from pytorch_fid import inception as fid

    torch.manual_seed(seed)
    model = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    model.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    model.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    model.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    model.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
    model.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
    model.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
    model.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
    model.Mixed_7b = fid.FIDInceptionE_1(1280)
    model.Mixed_7c = fid.FIDInceptionE_2(2048)
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in batch_norms:
        norm.momentum = None  # running statistics = plain average over the calibration batch
        norm.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 299, 299) * 2 - 1)
        for norm in batch_norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.2)
        model.fc.bias.normal_(0.0, 0.5)
    return {key: value.clone() for key, value in model.state_dict().items()}


def _build_reference(state_dict):
    """pytorch-fid's fid_inception_v3() and its InceptionV3 wrapper, loading `state_dict`."""
    from pytorch_fid import inception as fid

    fid.load_state_dict_from_url = lambda *args, **kwargs: state_dict
    network = fid.fid_inception_v3()  # load_state_dict is strict: the keys match exactly
    fid.fid_inception_v3 = lambda: network
    wrapper = fid.InceptionV3(output_blocks=[3])  # resize_input and normalize_input: True
    return network.eval(), wrapper.eval()


def _reference_features(network, wrapper, images_unit: np.ndarray) -> dict:
    """pytorch-fid's features of NHWC images in [0, 1]."""
    captured = {}
    hook = network.Mixed_6d.branch1x1.register_forward_hook(
        lambda module, args, output: captured.setdefault("branch1x1", output)
    )
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images_unit.transpose(0, 3, 1, 2)))
        pool = wrapper(x)[0].flatten(1)  # [B, 2048]
        logits = network.fc(pool)
        logits_unbiased = pool @ network.fc.weight.T
    hook.remove()
    spatial = captured["branch1x1"].permute(0, 2, 3, 1)[..., :7].flatten(1)  # [B, 17 * 17 * 7]
    values = (pool, logits, logits_unbiased, spatial)
    return {name: value.numpy() for name, value in zip(FEATURES, values, strict=True)}


def write_reference(path: str) -> None:
    state_dict = _random_state_dict(seed=0)
    network, wrapper = _build_reference(state_dict)
    arrays = {f"state/{key}": value.numpy() for key, value in state_dict.items()}
    for name, images in _inputs().items():
        if name.startswith("resize"):
            resized = torch.nn.functional.interpolate(
                torch.from_numpy(images.transpose(0, 3, 1, 2)),
                size=(299, 299),
                mode="bilinear",
                align_corners=False,
            )
            arrays[f"{name}/resized"] = resized.numpy().transpose(0, 2, 3, 1)
            continue
        unit = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
        for feature, value in _reference_features(network, wrapper, unit).items():
            arrays[f"{name}/{feature}"] = value
    np.savez(path, **arrays)


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pytorch_fid") / "reference.npz")
    subprocess.run([sys.executable, os.path.abspath(__file__), path], check=True)
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    from mmgen_jax.metrics import inception

    state = {
        key[len("state/") :]: value for key, value in arrays.items() if key.startswith("state/")
    }
    return arrays, inception.torch_to_flax_variables(state)


def _relative_difference(name: str, ours, expected: np.ndarray) -> float:
    ours = np.asarray(ours)
    assert ours.shape == expected.shape, name
    assert expected.std() > 1e-2, f"{name} is degenerate in the reference"
    max_abs = float(np.max(np.abs(ours - expected)))
    relative = max_abs / float(np.max(np.abs(expected)))
    print(f"{name}: max abs diff {max_abs:.3g}, relative to max |reference| {relative:.3g}")
    return relative


@pytest.mark.parametrize("size", UNIT_SIZES)
def test_features_match_pytorch_fid(reference, size):
    from mmgen_jax.metrics import inception

    arrays, variables = reference
    images = _inputs()[f"unit_{size}"]
    ours = inception.extract_features(
        variables, images, input_range="unit", convention="pytorch_fid"
    )
    for feature in FEATURES:
        expected = arrays[f"unit_{size}/{feature}"]
        assert _relative_difference(f"{size}px {feature}", ours[feature], expected) < (
            RELATIVE_TOLERANCE
        )


def test_uint8_and_symmetric_inputs_match(reference):
    from mmgen_jax.metrics import inception

    arrays, variables = reference
    pixels = _inputs()["uint8_64"]
    symmetric = pixels.astype(np.float32) / 127.5 - 1.0
    for input_range, images in (("uint8", pixels), ("symmetric", symmetric)):
        ours = inception.extract_features(
            variables, images, input_range=input_range, convention="pytorch_fid"
        )
        for feature in FEATURES:
            expected = arrays[f"uint8_64/{feature}"]
            name = f"64px {input_range} {feature}"
            assert _relative_difference(name, ours[feature], expected) < RELATIVE_TOLERANCE


def test_resize_matches_torch_interpolate(reference):
    from mmgen_jax.metrics import inception

    arrays, _ = reference
    ours = inception.resize_bilinear(_inputs()["resize_37x300"], 299, "pytorch_fid")
    np.testing.assert_allclose(np.asarray(ours), arrays["resize_37x300/resized"], atol=2e-6)


if __name__ == "__main__":
    write_reference(sys.argv[1])
