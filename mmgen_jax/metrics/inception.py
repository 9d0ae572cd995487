"""The FID-standard InceptionV3 (the 2015 TensorFlow graph) in Flax, and its weight importer.

FID, sFID, Inception Score and precision/recall are only comparable between papers when they
are computed with one particular network: the InceptionV3 graph TensorFlow released in 2015
(`inception-2015-12-05.tgz`, `classify_image_graph_def.pb`), which the ADM evaluator
(openai/guided-diffusion `evaluations/evaluator.py`, used for the DiT paper's numbers) runs, and
which pytorch-fid ports as `FIDInceptionV3` with the weights `pt_inception-2015-12-05-6726825d.pth`.
`InceptionV3` below is that network: torchvision's inception_v3 layout with 1008 classes, no aux
head, BatchNorm with eps 1e-3 in inference mode, and the graph's quirks that pytorch-fid patches
in: the 3x3 average pools of the A, C and E blocks do not count the zero padding, and the pool
branch of the last block (Mixed_7c) is a max pool.

Outputs for a batch of images [B, H, W, 3]:
  - `pool` [B, 2048]: the final average pool (TF `pool_3:0`), for FID and precision/recall.
  - `logits` [B, 1008]: `pool @ W + b` of the classifier (torch's `fc`).
  - `logits_unbiased` [B, 1008]: `pool @ W` without the bias. The ADM evaluator (and the
    improved-GAN code it follows) computes the Inception Score from the softmax of the TF graph's
    `softmax/logits/MatMul`, i.e. without the bias; torch-fidelity does the same.
  - `spatial` [B, 2023]: ADM's sFID features, the TF tensor `mixed_6/conv:0` sliced to its first
    7 channels and flattened in (height, width, channel) order (17 * 17 * 7). In the 2015 graph
    the blocks are named `mixed`, `mixed_1`, ... `mixed_10` for torchvision's Mixed_5b ... Mixed_7c,
    and `<block>/conv` is the 1x1 branch, so `mixed_6/conv` is `Mixed_6d.branch1x1` after its
    BatchNorm and ReLU (torch-fidelity's TF-to-PyTorch name map pairs the same two). That branch
    is the first slice of Mixed_6d's concatenated output, which is what is taken here.

Input conventions (`convention`):
  - "adm": what the ADM evaluator feeds the TF graph: pixel values in [0, 255] as float, resized
    to 299x299 inside the graph by TF1's `ResizeBilinear` (align_corners=False, no half-pixel
    centres: source = destination * in / out), then `(x - 128) / 128`. Use this, with uint8
    samples, to reproduce numbers measured with the ADM evaluator.
  - "pytorch_fid": pytorch-fid's: images in [0, 1], `F.interpolate(bilinear, align_corners=False)`
    (half-pixel centres) to 299x299, then `2 x - 1`.
Images are given as uint8 [0, 255] (`input_range="uint8"`) or float in [0, 1] ("unit") or
[-1, 1] ("symmetric"); anything else (wrong dtype, values out of the declared range, not 3
channels) is an error naming the problem. Everything is computed in float32.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FID_WEIGHTS_URL",
    "INCEPTION_SIZE",
    "InceptionV3",
    "extract_features",
    "load_inception",
    "preprocess",
    "resize_bilinear",
    "torch_to_flax_variables",
]

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
INCEPTION_SIZE = 299
NUM_CLASSES = 1008  # the 2015 graph's classifier has 1008 outputs (1000 classes + unused ones)
SPATIAL_CHANNELS = 7  # ADM keeps the first 7 channels of mixed_6/conv: 17 * 17 * 7 = 2023
BATCH_NORM_EPSILON = 1e-3
# Full float32 convolutions and matmuls: on GPUs and TPUs the default precision rounds inputs
# to TF32/bfloat16, which would move the features away from the reference network's.
PRECISION = jax.lax.Precision.HIGHEST

InputRange = Literal["uint8", "unit", "symmetric"]
Convention = Literal["adm", "pytorch_fid"]
_RANGES = {"unit": (0.0, 1.0), "symmetric": (-1.0, 1.0)}
# Float images may stray this far outside their declared range (round-off of a decoder's
# output); they are clipped. Anything further is an error: most likely the wrong range.
_RANGE_TOLERANCE = 1e-3

Padding = int | tuple[int, int]


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------


class BasicConv(nn.Module):
    """Conv (no bias) -> BatchNorm (inference, eps 1e-3) -> ReLU, torchvision's BasicConv2d."""

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: Padding = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = self.padding if isinstance(self.padding, tuple) else (self.padding,) * 2
        x = nn.Conv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding=((pad[0], pad[0]), (pad[1], pad[1])),
            use_bias=False,
            precision=PRECISION,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPSILON, name="bn")(x)
        return nn.relu(x)


def _average_pool_3x3(x: jax.Array) -> jax.Array:
    # TF's average pool divides by the number of real (unpadded) pixels in the window.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1, 5x5, double 3x3 and pooled branches."""

    pool_features: int

    @nn.compact
    def __call__(self, x):
        branch1x1 = BasicConv(64, (1, 1), name="branch1x1")(x)
        branch5x5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
        branch5x5 = BasicConv(64, (5, 5), padding=2, name="branch5x5_2")(branch5x5)
        branch3x3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        branch3x3 = BasicConv(96, (3, 3), padding=1, name="branch3x3dbl_2")(branch3x3)
        branch3x3 = BasicConv(96, (3, 3), padding=1, name="branch3x3dbl_3")(branch3x3)
        pooled = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_average_pool_3x3(x))
        return jnp.concatenate([branch1x1, branch5x5, branch3x3, pooled], axis=-1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction (Mixed_6a)."""

    @nn.compact
    def __call__(self, x):
        branch3x3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
        branch_double = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        branch_double = BasicConv(96, (3, 3), padding=1, name="branch3x3dbl_2")(branch_double)
        branch_double = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(branch_double)
        return jnp.concatenate([branch3x3, branch_double, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block (Mixed_6b..e) with factorised 7x7 convolutions; 1x1 branch first."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        branch1x1 = BasicConv(192, (1, 1), name="branch1x1")(x)
        branch7x7 = BasicConv(c7, (1, 1), name="branch7x7_1")(x)
        branch7x7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
        branch7x7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
        double = BasicConv(c7, (1, 1), name="branch7x7dbl_1")(x)
        double = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(double)
        double = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(double)
        double = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(double)
        double = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(double)
        pooled = BasicConv(192, (1, 1), name="branch_pool")(_average_pool_3x3(x))
        return jnp.concatenate([branch1x1, branch7x7, double, pooled], axis=-1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction (Mixed_7a)."""

    @nn.compact
    def __call__(self, x):
        branch3x3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
        branch3x3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(branch3x3)
        branch7x7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
        branch7x7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7)
        branch7x7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7)
        branch7x7 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(branch7x7)
        return jnp.concatenate([branch3x3, branch7x7, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block (Mixed_7b/c) with split 1x3 / 3x1 convolutions.

    `max_pool`: the pool branch of the graph's last block (Mixed_7c) is a 3x3 max pool, where
    the paper and torchvision use an average pool; pytorch-fid's FIDInceptionE_2 patches it in.
    """

    max_pool: bool = False

    @nn.compact
    def __call__(self, x):
        branch1x1 = BasicConv(320, (1, 1), name="branch1x1")(x)
        branch3x3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
        branch3x3 = jnp.concatenate(
            [
                BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
                BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3),
            ],
            axis=-1,
        )
        double = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
        double = BasicConv(384, (3, 3), padding=1, name="branch3x3dbl_2")(double)
        double = jnp.concatenate(
            [
                BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(double),
                BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(double),
            ],
            axis=-1,
        )
        if self.max_pool:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = _average_pool_3x3(x)
        pooled = BasicConv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([branch1x1, branch3x3, double, pooled], axis=-1)


class InceptionV3(nn.Module):
    """The FID InceptionV3 on preprocessed images [B, 299, 299, 3] in [-1, 1] (see `preprocess`).

    Returns {'pool' [B, 2048], 'logits' [B, 1008], 'logits_unbiased' [B, 1008],
    'spatial' [B, 2023]}. Submodule names are torchvision's, so torch keys map one to one.
    """

    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)  # [B, 149, 149, 32]
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)  # [B, 147, 147, 32]
        x = BasicConv(64, (3, 3), padding=1, name="Conv2d_2b_3x3")(x)  # [B, 147, 147, 64]
        x = _max_pool_3x3_stride2(x)  # [B, 73, 73, 64]
        x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)  # [B, 73, 73, 80]
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)  # [B, 71, 71, 192]
        x = _max_pool_3x3_stride2(x)  # [B, 35, 35, 192]
        x = InceptionA(32, name="Mixed_5b")(x)  # [B, 35, 35, 256]
        x = InceptionA(64, name="Mixed_5c")(x)  # [B, 35, 35, 288]
        x = InceptionA(64, name="Mixed_5d")(x)  # [B, 35, 35, 288]
        x = InceptionB(name="Mixed_6a")(x)  # [B, 17, 17, 768]
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)  # [B, 17, 17, 768], branch1x1 first
        spatial = x[..., :SPATIAL_CHANNELS].reshape(x.shape[0], -1)  # [B, 17 * 17 * 7]
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)  # [B, 8, 8, 1280]
        x = InceptionE(name="Mixed_7b")(x)  # [B, 8, 8, 2048]
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)  # [B, 8, 8, 2048]
        pool = jnp.mean(x, axis=(1, 2))  # [B, 2048]
        classifier = nn.Dense(self.num_classes, precision=PRECISION, name="fc")
        logits = classifier(pool)  # [B, 1008]
        kernel = classifier.variables["params"]["kernel"]  # [2048, 1008]
        logits_unbiased = jnp.matmul(pool, kernel, precision=PRECISION)
        return {
            "pool": pool,
            "logits": logits,
            "logits_unbiased": logits_unbiased,
            "spatial": spatial,
        }


# ----------------------------------------------------------------------------------------------
# Input preprocessing
# ----------------------------------------------------------------------------------------------


def _interpolation_matrix(in_size: int, out_size: int, half_pixel: bool) -> np.ndarray:
    """[out_size, in_size] weights of 1-d bilinear interpolation (rows sum to 1).

    half_pixel=True is PyTorch's align_corners=False (source = (i + 0.5) * in / out - 0.5,
    clamped at 0); half_pixel=False is TF1's legacy ResizeBilinear (source = i * in / out). Both
    clamp the upper neighbour to the last pixel.
    """
    # Source coordinates in float32, as both references compute them (TF's resize kernel and
    # PyTorch's CPU upsample_bilinear2d): float64 positions would differ by up to ~3e-5 in value.
    scale = np.float32(in_size) / np.float32(out_size)
    positions = np.arange(out_size, dtype=np.float32)
    if half_pixel:
        half = np.float32(0.5)
        source = np.maximum((positions + half) * scale - half, np.float32(0.0))
    else:
        source = positions * scale
    lower = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    fraction = (source - lower.astype(np.float32)).astype(np.float64)
    matrix = np.zeros((out_size, in_size), np.float64)
    np.add.at(matrix, (np.arange(out_size), lower), 1.0 - fraction)
    np.add.at(matrix, (np.arange(out_size), upper), fraction)
    return matrix.astype(np.float32)


def resize_bilinear(images: jax.Array, size: int, convention: Convention) -> jax.Array:
    """Bilinear resize of [B, H, W, C] to [B, size, size, C], with no antialiasing.

    "pytorch_fid" follows `F.interpolate(mode='bilinear', align_corners=False)`, "adm" TF1's
    `ResizeBilinear` inside the 2015 graph. (jax.image.resize antialiases when shrinking, which
    neither reference does.) Applied as two small matrix products, so it is exact and cheap.
    """
    _check_convention(convention)
    height, width = images.shape[1:3]
    if (height, width) == (size, size):
        return images
    half_pixel = convention == "pytorch_fid"
    rows = jnp.asarray(_interpolation_matrix(height, size, half_pixel))  # [size, H]
    cols = jnp.asarray(_interpolation_matrix(width, size, half_pixel))  # [size, W]
    images = jnp.einsum("oh,bhwc->bowc", rows, images, precision=PRECISION)
    return jnp.einsum("pw,bowc->bopc", cols, images, precision=PRECISION)


def _check_convention(convention: str) -> None:
    if convention not in ("adm", "pytorch_fid"):
        raise ValueError(f"convention must be 'adm' or 'pytorch_fid', got {convention!r}")


def _check_images(images: Any, input_range: str) -> None:
    """Raises ValueError for a shape, dtype or value range that does not fit `input_range`."""
    if input_range not in ("uint8", "unit", "symmetric"):
        raise ValueError(f"input_range must be 'uint8', 'unit' or 'symmetric', got {input_range!r}")
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(
            f"images must be [B, H, W, 3] RGB, got shape {shape}"
            + (" (repeat grey images to 3 channels first)" if shape[-1:] == (1,) else "")
        )
    if min(shape[1:3]) < 2:
        raise ValueError(f"images of {shape[1]}x{shape[2]} pixels are too small to resize")
    dtype = np.dtype(images.dtype)
    if input_range == "uint8":
        if dtype != np.uint8:
            raise ValueError(
                f"input_range='uint8' needs uint8 images, got {dtype}; pass input_range='unit' "
                "or 'symmetric' for float images"
            )
        return
    if not np.issubdtype(dtype, np.floating) and dtype != jnp.bfloat16:
        raise ValueError(f"input_range={input_range!r} needs float images, got {dtype}")
    low, high = _RANGES[input_range]
    if shape[0] == 0:
        return
    smallest, largest = float(jnp.min(images)), float(jnp.max(images))
    if not (np.isfinite(smallest) and np.isfinite(largest)):
        raise ValueError("images contain NaN or infinite values")
    if smallest < low - _RANGE_TOLERANCE or largest > high + _RANGE_TOLERANCE:
        raise ValueError(
            f"images span [{smallest:.4g}, {largest:.4g}], outside input_range={input_range!r} "
            f"[{low}, {high}]"
        )


def preprocess(images: jax.Array, input_range: InputRange, convention: Convention) -> jax.Array:
    """[B, H, W, 3] images -> [B, 299, 299, 3] float32 network input in [-1, 1] (jit-able).

    Values are not checked here (see `extract_features`); float inputs are clipped to their range.
    """
    _check_convention(convention)
    if input_range == "uint8":
        pixels = images.astype(jnp.float32)  # [0, 255], exact
    else:
        low, high = _RANGES[input_range]
        unit = (jnp.clip(images.astype(jnp.float32), low, high) - low) / (high - low)
        pixels = unit * 255.0
    if convention == "adm":
        resized = resize_bilinear(pixels, INCEPTION_SIZE, convention)
        return (resized - 128.0) / 128.0
    if input_range == "uint8":
        unit = pixels / 255.0
    return 2.0 * resize_bilinear(unit, INCEPTION_SIZE, convention) - 1.0


@functools.partial(jax.jit, static_argnames=("input_range", "convention"))
def _features(variables, images, input_range, convention):
    inputs = preprocess(images, input_range, convention)
    return InceptionV3().apply(variables, inputs)


def extract_features(
    variables: Mapping[str, Any],
    images: Any,
    *,
    input_range: InputRange = "uint8",
    convention: Convention = "adm",
) -> dict[str, jax.Array]:
    """Inception features of `images` [B, H, W, 3]: {'pool', 'logits', 'logits_unbiased',
    'spatial'} as float32 arrays (shapes in the module docstring).

    Checks the images on the host (one min/max reduction), then runs one jit-compiled function
    per (shape, input_range, convention); sharded batches stay sharded.
    """
    _check_images(images, input_range)
    _check_convention(convention)
    return _features(variables, images, input_range, convention)


# ----------------------------------------------------------------------------------------------
# Weights: pytorch-fid's state dict -> Flax variables
# ----------------------------------------------------------------------------------------------


@functools.cache
def _abstract_variables() -> Mapping[str, Any]:
    shape = jax.ShapeDtypeStruct((1, INCEPTION_SIZE, INCEPTION_SIZE, 3), jnp.float32)
    return jax.eval_shape(InceptionV3().init, jax.random.key(0), shape)


def _torch_entry(collection: str, path: tuple[str, ...], shape: tuple[int, ...]):
    """(torch key, torch shape, array -> flax array) for one Flax leaf."""
    module, leaf = ".".join(path[:-1]), path[-1]
    if collection == "batch_stats":
        key = {"mean": "running_mean", "var": "running_var"}[leaf]
        return f"{module}.{key}", shape, lambda a: a
    if leaf == "kernel" and len(shape) == 4:  # conv: torch [O, I, kh, kw] -> [kh, kw, I, O]
        torch_shape = (shape[3], shape[2], shape[0], shape[1])
        return f"{module}.weight", torch_shape, lambda a: np.transpose(a, (2, 3, 1, 0))
    if leaf == "kernel":  # dense: torch [out, in] -> [in, out]
        return f"{module}.weight", shape[::-1], lambda a: a.T
    if leaf == "scale":  # BatchNorm gamma
        return f"{module}.weight", shape, lambda a: a
    return f"{module}.bias", shape, lambda a: a


def torch_to_flax_variables(
    state_dict: Mapping[str, Any], source: str = "state dict"
) -> dict[str, Any]:
    """pytorch-fid's FIDInceptionV3 state dict {key: array} -> Flax {'params', 'batch_stats'}.

    Every expected key must be present with its torch shape; keys the model does not use are an
    error too (a different network), except BatchNorm's `num_batches_tracked` counters.

    Raises:
      KeyError: missing or unexpected keys, named (with `source`, e.g. the file).
      ValueError: a key whose shape differs, with both shapes.
    """
    abstract = _abstract_variables()
    variables: dict[str, Any] = {}
    used = set()
    missing = []
    for collection in ("params", "batch_stats"):
        flat = jax.tree_util.tree_flatten_with_path(abstract[collection])[0]
        for key_path, leaf in flat:
            path = tuple(entry.key for entry in key_path)
            torch_key, torch_shape, convert = _torch_entry(collection, path, leaf.shape)
            if torch_key not in state_dict:
                missing.append(torch_key)
                continue
            array = np.asarray(state_dict[torch_key], dtype=np.float32)
            if array.shape != torch_shape:
                raise ValueError(
                    f"{source}: {torch_key} has shape {array.shape}, the FID InceptionV3 "
                    f"expects {torch_shape}"
                )
            used.add(torch_key)
            node = variables.setdefault(collection, {})
            for name in path[:-1]:
                node = node.setdefault(name, {})
            node[path[-1]] = jnp.asarray(convert(array))
    if missing:
        raise KeyError(
            f"{source}: {len(missing)} weights of the FID InceptionV3 are missing, e.g. "
            f"{missing[:5]}; is this pytorch-fid's pt_inception-2015-12-05 state dict?"
        )
    unexpected = sorted(
        key for key in state_dict if key not in used and not key.endswith("num_batches_tracked")
    )
    if unexpected:
        raise KeyError(
            f"{source}: {len(unexpected)} keys are not part of the FID InceptionV3, e.g. "
            f"{unexpected[:5]}"
        )
    return variables


def load_inception(path: str | os.PathLike) -> tuple[InceptionV3, dict[str, Any]]:
    """(module, variables) from pytorch-fid's weight file, `.pth`/`.pt`, `.npz` or `.safetensors`.

    A `.pth` is read with `torch.load(weights_only=True)` (torch is imported only then); the
    same state dict saved as `.npz` or `.safetensors` needs no torch. Nothing is downloaded.

    Raises:
      FileNotFoundError: `path` does not exist; the message says where to get the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"InceptionV3 weights not found at {path!r}. Download pytorch-fid's "
            f"pt_inception-2015-12-05-6726825d.pth from {FID_WEIGHTS_URL} on a machine with "
            "network access, copy it here and pass its path (e.g. --inception_weights PATH)."
        )
    from mmgen_jax.tools.import_dit import load_state_dict  # .npz / .safetensors / torch files

    state_dict = load_state_dict(path)
    return InceptionV3(), torch_to_flax_variables(state_dict, source=path)
