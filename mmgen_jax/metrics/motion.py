"""Sprite location and motion statistics for clips of one moving sprite (moving digits).

Generated moving-digit clips are judged on what the dataset guarantees for real ones: one bright
square sprite per frame, moving with a constant speed per axis whose sign flips at the walls.

* `locate_sprites`: the top-left corner of the `size x size` window with the largest intensity
  sum in each frame (a box-sum argmax; exact for a sprite on a black canvas whenever the sprite
  has no all-black border row or column, approximate otherwise).
* `crop_sprites`: the windows at those corners, ready for a classifier of `size x size` images.
* `motion_statistics`: from the corners, how often a transition's speed per axis equals the
  previous transition's (`motion_consistency`; 1.0 for real clips, where bounces flip only the
  sign), the mean change of speed in px/frame, the mean speed, and the share of clips that never
  move (a static sprite would be perfectly "consistent").

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


def motion_statistics(positions: np.ndarray) -> dict[str, float]:
    """Motion of sprites from their corners `[N, T, 2]` (T >= 3).

    Returns:
      motion_consistency: fraction of consecutive transition pairs whose |velocity| equals on
        both axes (a bounce flips the sign only).
      speed_change: mean over transition pairs and axes of ||v_t| - |v_{t-1}|| in px/frame.
      mean_speed: mean |velocity| per axis in px/frame.
      static_fraction: fraction of clips whose sprite never moves.
    """
    positions = np.asarray(positions, np.int64)
    if positions.ndim != 3 or positions.shape[1] < 3:
        raise ValueError(f"positions must be [N, T>=3, 2], got shape {positions.shape}")
    speed = np.abs(np.diff(positions, axis=1))  # [N, T-1, 2]
    change = np.abs(speed[:, 1:] - speed[:, :-1])  # [N, T-2, 2]
    return {
        "motion_consistency": float(np.mean(np.all(change == 0, axis=-1))),
        "speed_change": float(change.mean()),
        "mean_speed": float(speed.mean()),
        "static_fraction": float(np.mean(np.all(speed == 0, axis=(1, 2)))),
    }
