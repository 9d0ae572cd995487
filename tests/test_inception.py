"""Tests for mmgen_jax.metrics.inception that need no torch and no full-size forward pass.

The network's numbers are checked against pytorch-fid in tests/test_inception_torch_parity.py
(opt-in); here: output shapes, the importer's layout and errors, resizing against hand values
and loop-by-loop transcriptions of the two reference kernels, and input validation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmgen_jax.metrics import inception


def _valid_state_dict() -> dict[str, np.ndarray]:
    """A zero state dict with every key and torch shape of pytorch-fid's FIDInceptionV3."""
    abstract = inception._abstract_variables()
    state = {}
    for collection in ("params", "batch_stats"):
        for key_path, leaf in jax.tree_util.tree_flatten_with_path(abstract[collection])[0]:
            path = tuple(entry.key for entry in key_path)
            key, shape, _ = inception._torch_entry(collection, path, leaf.shape)
            state[key] = np.zeros(shape, np.float32)
    return state


@pytest.fixture(scope="module")
def state_dict():
    return _valid_state_dict()


def test_output_shapes_of_the_full_network():
    variables = inception._abstract_variables()
    images = jax.ShapeDtypeStruct((3, 256, 256, 3), jnp.uint8)
    outputs = jax.eval_shape(
        lambda v, x: inception._features(v, x, "uint8", "adm"), variables, images
    )
    shapes = {name: value.shape for name, value in outputs.items()}
    assert shapes == {
        "pool": (3, 2048),
        "logits": (3, 1008),
        "logits_unbiased": (3, 1008),
        "spatial": (3, 17 * 17 * 7),
    }
    assert variables["params"]["fc"]["kernel"].shape == (2048, 1008)
    # Mixed_6d's first 192 output channels are its 1x1 branch (ADM's mixed_6/conv).
    assert variables["params"]["Mixed_6d"]["branch1x1"]["conv"]["kernel"].shape == (
        1,
        1,
        768,
        192,
    )


def test_pytorch_fid_state_dict_layout(state_dict):
    # torchvision's inception_v3 with 1008 classes and no aux head: 94 conv+BN units.
    assert len([key for key in state_dict if key.endswith(".conv.weight")]) == 94
    assert state_dict["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state_dict["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert state_dict["fc.weight"].shape == (1008, 2048)
    assert not any(key.startswith("AuxLogits") for key in state_dict)


def test_importer_transposes_convolutions_and_the_classifier(state_dict):
    state = dict(state_dict)
    conv = np.arange(64 * 32 * 3 * 3, dtype=np.float32).reshape(64, 32, 3, 3)  # [O, I, kh, kw]
    state["Conv2d_2b_3x3.conv.weight"] = conv
    state["fc.weight"] = np.arange(1008 * 2048, dtype=np.float32).reshape(1008, 2048)
    state["Mixed_5b.branch1x1.bn.running_var"] = np.full(64, 3.0, np.float32)
    state["Mixed_5b.branch1x1.bn.num_batches_tracked"] = np.array(7)
    variables = inception.torch_to_flax_variables(state)
    kernel = np.asarray(variables["params"]["Conv2d_2b_3x3"]["conv"]["kernel"])
    assert kernel.shape == (3, 3, 32, 64)
    assert kernel[2, 1, 5, 7] == conv[7, 5, 2, 1]
    dense = np.asarray(variables["params"]["fc"]["kernel"])
    assert dense[3, 11] == state["fc.weight"][11, 3]
    assert variables["batch_stats"]["Mixed_5b"]["branch1x1"]["bn"]["var"][0] == 3.0


def test_importer_names_the_missing_wrong_and_unexpected_keys(state_dict):
    missing = {k: v for k, v in state_dict.items() if k != "Mixed_6d.branch1x1.bn.running_mean"}
    with pytest.raises(KeyError, match=r"weights.pth: 1 weights .* missing.*Mixed_6d\.branch1x1"):
        inception.torch_to_flax_variables(missing, source="weights.pth")
    wrong = dict(state_dict, **{"fc.weight": np.zeros((1000, 2048), np.float32)})
    with pytest.raises(ValueError, match=r"fc\.weight has shape \(1000, 2048\).*\(1008, 2048\)"):
        inception.torch_to_flax_variables(wrong)
    extra = dict(state_dict, **{"AuxLogits.fc.weight": np.zeros((1008, 768), np.float32)})
    with pytest.raises(KeyError, match=r"1 keys are not part.*AuxLogits\.fc\.weight"):
        inception.torch_to_flax_variables(extra)


def test_load_inception_reads_npz_and_explains_a_missing_file(tmp_path, state_dict):
    with pytest.raises(FileNotFoundError) as error:
        inception.load_inception(tmp_path / "pt_inception.pth")
    message = str(error.value)
    assert str(tmp_path / "pt_inception.pth") in message
    assert inception.FID_WEIGHTS_URL in message and "--inception_weights" in message
    state = dict(state_dict, **{"fc.bias": np.arange(1008, dtype=np.float32)})
    np.savez(tmp_path / "inception.npz", **state)
    module, variables = inception.load_inception(tmp_path / "inception.npz")
    assert isinstance(module, inception.InceptionV3)
    np.testing.assert_array_equal(variables["params"]["fc"]["bias"], np.arange(1008))


# Resizing --------------------------------------------------------------------------------------


def _loop_resize(image: np.ndarray, size: int, half_pixel: bool) -> np.ndarray:
    """Per-pixel transcription of PyTorch's (half_pixel) / TF1's bilinear kernel, [H, W]."""
    height, width = image.shape
    out = np.zeros((size, size), np.float64)
    scale_y, scale_x = np.float32(height) / np.float32(size), np.float32(width) / np.float32(size)

    def source(index, scale, length):
        if half_pixel:
            position = max((np.float32(index) + np.float32(0.5)) * scale - np.float32(0.5), 0)
        else:
            position = np.float32(index) * scale
        low = min(int(np.floor(position)), length - 1)
        return low, min(low + 1, length - 1), float(position - np.float32(low))

    for y in range(size):
        y0, y1, dy = source(y, scale_y, height)
        for x in range(size):
            x0, x1, dx = source(x, scale_x, width)
            top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * dx
            bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * dx
            out[y, x] = top + (bottom - top) * dy
    return out


def test_resize_hand_values():
    row = np.array([[0.0, 1.0]], np.float32)  # a 1-d ramp 0 -> 1 along the width
    image = np.repeat(row, 2, axis=0)[None, :, :, None]  # [1, 2, 2, 1]
    pytorch = np.asarray(inception.resize_bilinear(image, 4, "pytorch_fid"))[0, 0, :, 0]
    tf1 = np.asarray(inception.resize_bilinear(image, 4, "adm"))[0, 0, :, 0]
    # source x = (i + 0.5) / 2 - 0.5 clamped at 0: 0, 0.25, 0.75, 1.25 (-> last pixel)
    np.testing.assert_allclose(pytorch, [0.0, 0.25, 0.75, 1.0])
    # source x = i / 2: 0, 0.5, 1, 1.5 (-> last pixel)
    np.testing.assert_allclose(tf1, [0.0, 0.5, 1.0, 1.0])


@pytest.mark.parametrize("convention", ["pytorch_fid", "adm"])
@pytest.mark.parametrize("shape", [(7, 9), (13, 5)])
def test_resize_matches_a_per_pixel_transcription(convention, shape):
    image = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    ours = np.asarray(inception.resize_bilinear(image[None, :, :, None], 11, convention))
    expected = _loop_resize(image, 11, half_pixel=convention == "pytorch_fid")
    np.testing.assert_allclose(ours[0, :, :, 0], expected, atol=1e-6)


@pytest.mark.parametrize("size", [256, 512])
def test_adm_convention_equals_tensorflow_1_resize_bilinear(size):
    # The op inside the 2015 graph: ResizeBilinear(align_corners=False), no half-pixel centres.
    import tensorflow as tf

    images = np.random.default_rng(size).uniform(0, 255, (1, size, size, 2)).astype(np.float32)
    expected = tf.compat.v1.image.resize_bilinear(
        images, [299, 299], align_corners=False, half_pixel_centers=False
    ).numpy()
    ours = np.asarray(inception.resize_bilinear(images, 299, "adm"))
    np.testing.assert_allclose(ours, expected, atol=1e-4)  # a few float32 ulps of 255


def test_pytorch_convention_equals_jax_image_resize_when_upsampling():
    images = np.random.default_rng(1).uniform(size=(2, 40, 50, 3)).astype(np.float32)
    ours = inception.resize_bilinear(images, 64, "pytorch_fid")
    expected = jax.image.resize(images, (2, 64, 64, 3), "linear", antialias=False)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), atol=1e-6)


def test_preprocess_scales_each_range_like_its_reference():
    pixels = np.zeros((1, 299, 299, 3), np.uint8)
    pixels[0, 0, 0] = [0, 128, 255]
    adm = np.asarray(inception.preprocess(pixels, "uint8", "adm"))[0, 0, 0]
    np.testing.assert_allclose(adm, [-1.0, 0.0, 127 / 128])  # (x - 128) / 128
    torch_style = np.asarray(inception.preprocess(pixels, "uint8", "pytorch_fid"))[0, 0, 0]
    np.testing.assert_allclose(torch_style, [-1.0, 2 * 128 / 255 - 1, 1.0], atol=1e-6)
    symmetric = pixels.astype(np.float32) / 127.5 - 1
    from_symmetric = inception.preprocess(symmetric, "symmetric", "pytorch_fid")
    np.testing.assert_allclose(np.asarray(from_symmetric)[0, 0, 0], torch_style, atol=1e-6)


# Input validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "images, input_range, match",
    [
        (np.zeros((2, 64, 64, 1), np.uint8), "uint8", r"\[B, H, W, 3\].*repeat grey"),
        (np.zeros((64, 64, 3), np.uint8), "uint8", r"got shape \(64, 64, 3\)"),
        (np.zeros((2, 64, 64, 3), np.float32), "uint8", "needs uint8 images, got float32"),
        (np.zeros((2, 64, 64, 3), np.uint8), "unit", "needs float images, got uint8"),
        (np.full((2, 8, 8, 3), 255.0, np.float32), "unit", r"span \[255, 255\].*'unit'"),
        (np.full((2, 8, 8, 3), -0.5, np.float32), "unit", r"span \[-0.5, -0.5\]"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), "symmetric", "NaN"),
        (np.zeros((2, 8, 8, 3), np.float32), "minus_one_to_one", "input_range must be"),
    ],
)
def test_bad_images_are_rejected_before_the_network_runs(images, input_range, match):
    with pytest.raises(ValueError, match=match):
        inception.extract_features(None, images, input_range=input_range)


def test_unknown_convention_is_rejected():
    with pytest.raises(ValueError, match="convention must be"):
        inception.extract_features(None, np.zeros((1, 8, 8, 3), np.uint8), convention="tf2")
