"""Host-side image helpers: convert model outputs to uint8, tile them into grids, save PNGs.

Used by the trainers (reconstruction / sample grids written to TensorBoard) and by ``sample.py``.
All functions take and return numpy arrays, channels-last. Float images follow the model's
convention of values in [-1, 1]; uint8 images pass through unchanged.

Grayscale stays single-channel: a grid of ``[N, H, W, 1]`` images is ``[H', W', 1]``, which PNG
("L" mode) and TensorBoard both accept, so no memory is spent on three identical channels.
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image

__all__ = ["to_uint8", "make_grid", "side_by_side", "save_png"]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Maps float images in [-1, 1] to uint8 [0, 255] (-1 -> 0, 1 -> 255); clips out-of-range.

    uint8 input is returned unchanged, so callers need not track which form they hold.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    scaled = (images.astype(np.float32) + 1.0) * 127.5
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def make_grid(
    images: np.ndarray,
    *,
    ncols: int | None = None,
    pad: int = 1,
    upscale: int = 1,
    pad_value: int = 128,
) -> np.ndarray:
    """Tiles a batch of images into one image, row-major.

    Args:
      images: ``[N, H, W, C]`` with ``C`` in {1, 3}; float in [-1, 1] or uint8.
      ncols: images per row; defaults to ``ceil(sqrt(N))`` (a near-square grid).
      pad: pixels of ``pad_value`` between cells and around the border (not upscaled).
      upscale: each pixel is repeated ``upscale`` times along height and width, so 8x8 digits are
        visible in TensorBoard.
      pad_value: uint8 value of the separators and of unused cells; mid-grey by default so it is
        distinguishable from both black backgrounds and white strokes.

    Returns:
      ``[rows * (H * upscale + pad) + pad, ncols * (W * upscale + pad) + pad, C]`` uint8, with
      image ``i`` at row ``i // ncols`` and column ``i % ncols``.
    """
    images = to_uint8(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected [N, H, W, C] with C in (1, 3), got shape {images.shape}")
    if upscale < 1 or pad < 0:
        raise ValueError(f"need upscale >= 1 and pad >= 0, got {upscale=}, {pad=}")
    num_images, height, width, channels = images.shape
    if ncols is None:
        ncols = max(1, math.ceil(math.sqrt(num_images)))
    nrows = max(1, math.ceil(num_images / ncols))
    if upscale > 1:
        images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
        height, width = height * upscale, width * upscale

    cell_height, cell_width = height + pad, width + pad
    grid = np.full(
        (nrows * cell_height + pad, ncols * cell_width + pad, channels), pad_value, np.uint8
    )
    for index, image in enumerate(images):  # image: [H * upscale, W * upscale, C]
        top = pad + (index // ncols) * cell_height
        left = pad + (index % ncols) * cell_width
        grid[top : top + height, left : left + width] = image
    return grid


def side_by_side(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    *,
    pairs_per_row: int | None = None,
    pad: int = 1,
    upscale: int = 1,
    pad_value: int = 128,
) -> np.ndarray:
    """A grid of (original, reconstruction) pairs, each original directly left of its copy.

    Args:
      originals, reconstructions: ``[N, H, W, C]``, float in [-1, 1] or uint8, same shape.
      pairs_per_row: pairs per grid row (so ``2 * pairs_per_row`` cells); defaults to
        ``ceil(sqrt(N))``.
      pad, upscale, pad_value: as in ``make_grid``.

    Returns:
      uint8 grid as from ``make_grid(..., ncols=2 * pairs_per_row)`` where cell ``2 * i`` is
      ``originals[i]`` and cell ``2 * i + 1`` is ``reconstructions[i]``.
    """
    originals = to_uint8(originals)
    reconstructions = to_uint8(reconstructions)
    if originals.shape != reconstructions.shape:
        raise ValueError(f"shape mismatch: {originals.shape} vs {reconstructions.shape}")
    num_pairs = originals.shape[0]
    if pairs_per_row is None:
        pairs_per_row = max(1, math.ceil(math.sqrt(num_pairs)))
    # [N, 2, H, W, C] -> [2N, H, W, C]: original_0, reconstruction_0, original_1, ...
    interleaved = np.stack([originals, reconstructions], axis=1).reshape(
        (2 * num_pairs,) + originals.shape[1:]
    )
    return make_grid(
        interleaved, ncols=2 * pairs_per_row, pad=pad, upscale=upscale, pad_value=pad_value
    )


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes a uint8 image ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` as PNG.

    Parent directories are created. Float images are rejected rather than guessed at, because
    the project uses both [0, 1] and [-1, 1]; convert with ``to_uint8`` first.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"save_png expects uint8, got {image.dtype}; convert with to_uint8 first")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]  # [H, W, 1] -> [H, W]: PIL's "L" mode.
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise ValueError(f"expected [H, W] or [H, W, C] with C in (1, 3, 4), got {image.shape}")
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")
