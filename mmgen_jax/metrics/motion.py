"""Sprite location and motion statistics for clips of one moving sprite (moving digits).

Generated moving-digit clips are judged on what the dataset guarantees for real ones: one bright
sprite per frame, moving with a constant speed per axis whose sign flips at the walls.

* `locate_sprites`: the top-left corner of the `size x size` window with the largest intensity
  sum in each frame (a box-sum argmax). For a sprite on a black canvas it is the sprite's corner
  when the sprite has no all-black border row or column; otherwise several windows hold the
  whole sprite and the first is taken, which still holds all of it.
* `crop_sprites`: the windows at those corners, ready for a classifier of `size x size` images.
* `sprite_centres`: the intensity centroid inside each window. It moves exactly with the sprite
  (whatever its empty borders and however ties were broken), so it is what motion is read from.
* `motion_statistics`: from the centres, how often a transition's speed per axis equals the
  previous transition's within `tolerance` px (`motion_consistency`; 1.0 for real clips, where
  bounces flip only the sign), the mean change of speed in px/frame, the mean speed, and the
  share of clips that never move (a static sprite would be perfectly "consistent").

All functions are numpy, on the host: they run once per scored sample set.
"""

from __future__ import annotations

import numpy as np


def _intensity(clips: np.ndarray) -> np.ndarray:
    """Clips [N, T, H, W, C] in [-1, 1] -> intensity [N, T, H, W] in [0, 1] (channel mean)."""
    return (np.asarray(clips, np.float32).mean(axis=-1) + 1.0) / 2.0


def box_sums(frames: np.ndarray, size: int) -> np.ndarray:
    """Sums over every `size x size` window: frames [..., H, W] -> [..., H-size+1, W-size+1]."""
    if frames.shape[-1] < size or frames.shape[-2] < size:
        raise ValueError(f"frames of shape {frames.shape[-2:]} are smaller than the {size} window")
    windows = np.lib.stride_tricks.sliding_window_view(frames, (size, size), axis=(-2, -1))
    return windows.sum(axis=(-2, -1))


def locate_sprites(clips: np.ndarray, size: int) -> np.ndarray:
    """Top-left corners `[N, T, 2]` (row, column) of the brightest `size x size` window.

    Args:
      clips: [N, T, H, W, C] in [-1, 1].
      size: the sprite's side in pixels.
    """
    sums = box_sums(_intensity(clips), size)  # [N, T, H', W']
    flat = sums.reshape(*sums.shape[:2], -1).argmax(axis=-1)  # [N, T], first maximum wins
    rows, cols = np.unravel_index(flat, sums.shape[-2:])
    return np.stack([rows, cols], axis=-1).astype(np.int32)


def crop_sprites(clips: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    """The windows `[N, T, size, size, C]` of `clips` [N, T, H, W, C] at `positions` [N, T, 2]."""
    clips = np.asarray(clips)
    offsets = np.arange(size)
    rows = positions[..., 0, None] + offsets  # [N, T, size]
    cols = positions[..., 1, None] + offsets
    n = np.arange(clips.shape[0])[:, None, None, None]
    t = np.arange(clips.shape[1])[None, :, None, None]
    return clips[n, t, rows[..., :, None], cols[..., None, :]]  # [N, T, size, size, C]


def sprite_centres(clips: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    """Intensity centroids `[N, T, 2]` (row, column, float) of the windows at `positions`."""
    crops = _intensity(crop_sprites(clips, positions, size))  # [N, T, size, size]
    mass = np.maximum(crops.sum(axis=(-2, -1)), 1e-6)  # [N, T]
    offsets = np.arange(size, dtype=np.float64)
    rows = (crops.sum(axis=-1) * offsets).sum(axis=-1) / mass
    cols = (crops.sum(axis=-2) * offsets).sum(axis=-1) / mass
    return positions + np.stack([rows, cols], axis=-1)


def motion_statistics(centres: np.ndarray, tolerance: float = 0.5) -> dict[str, float]:
    """Motion of sprites from their positions `[N, T, 2]` (T >= 3), in pixels.

    Returns:
      motion_consistency: fraction of consecutive transition pairs whose |velocity| agrees
        within `tolerance` px on both axes (a bounce flips the sign only).
      speed_change: mean over transition pairs and axes of ||v_t| - |v_{t-1}|| in px/frame.
      mean_speed: mean |velocity| per axis in px/frame.
      static_fraction: fraction of clips whose sprite never moves by `tolerance` or more.
    """
    centres = np.asarray(centres, np.float64)
    if centres.ndim != 3 or centres.shape[1] < 3:
        raise ValueError(f"positions must be [N, T>=3, 2], got shape {centres.shape}")
    speed = np.abs(np.diff(centres, axis=1))  # [N, T-1, 2]
    change = np.abs(speed[:, 1:] - speed[:, :-1])  # [N, T-2, 2]
    return {
        "motion_consistency": float(np.mean(np.all(change < tolerance, axis=-1))),
        "speed_change": float(change.mean()),
        "mean_speed": float(speed.mean()),
        "static_fraction": float(np.mean(np.all(speed < tolerance, axis=(1, 2)))),
    }
