"""TFDS builder for moving digits: an 8x8 sklearn digit bouncing around a 32x32 canvas.

A Moving-MNIST-like video dataset that builds offline in seconds, for the video smoke tests and
the video quickstart. Each clip shows one 8x8 digit sprite (from `builders/digits.py`) pasted on
a black 32x32 canvas, moving with a constant integer velocity and bouncing off the walls; the
label is the digit. Train clips use the train digits, validation and test clips the validation
and test digits (`digits.SPLIT_RANGES`), so the test clips show writers never seen in training.

Motion: the sprite's top-left corner `p` lives in `[0, 32 - 8]` per axis; each step adds the
velocity `v` (per axis a non-zero integer in `[-MAX_SPEED, MAX_SPEED]`), and when `p + v` would
leave the canvas the velocity's sign flips first. The speed per axis is therefore the same in
every transition (a bounce flips only the sign), which is what the `moving_digits` scorer
checks on generated clips. Every clip is a pure function of (split, digit index, clip index).

Configs: `moving_digits` (= `moving_digits/8_frames`) and `moving_digits/16_frames`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from mmgen_jax.data.builders import digits

CANVAS_SIZE = 32
SPRITE_SIZE = 8
MAX_SPEED = 3  # pixels per frame and axis
FPS = 8
# Clips per source digit in each split: 1,300 x 2 = 2,600 train, 200 validation, 297 test.
CLIPS_PER_DIGIT = {"train": 2, "validation": 1, "test": 1}
_SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
_BASE_SEED = 20_241


def bounce_trajectory(
    start: np.ndarray, velocity: np.ndarray, num_frames: int, max_position: int
) -> np.ndarray:
    """Top-left positions `[num_frames, 2]` of a sprite bouncing inside `[0, max_position]`.

    The velocity's sign flips on an axis whenever the next step would leave the range, so every
    transition moves by exactly `|velocity|` per axis.
    """
    position, velocity = np.array(start, np.int64), np.array(velocity, np.int64)
    if np.any(np.abs(velocity) * 2 > max_position):
        raise ValueError(f"velocity {velocity} too fast for positions in [0, {max_position}]")
    positions = [position.copy()]
    for _ in range(num_frames - 1):
        outside = (position + velocity < 0) | (position + velocity > max_position)
        velocity = np.where(outside, -velocity, velocity)
        position = position + velocity
        positions.append(position.copy())
    return np.stack(positions).astype(np.int32)


def render_clip(sprite: np.ndarray, positions: np.ndarray, canvas_size: int) -> np.ndarray:
    """Pastes `sprite` [s, s, C] at each top-left position -> uint8 clip [T, size, size, C]."""
    size = sprite.shape[0]
    clip = np.zeros((len(positions), canvas_size, canvas_size, sprite.shape[-1]), np.uint8)
    for frame, (row, col) in zip(clip, positions, strict=True):
        frame[row : row + size, col : col + size] = sprite
    return clip


def make_clip(sprite: np.ndarray, num_frames: int, seed: tuple[int, ...]) -> dict[str, np.ndarray]:
    """One clip of `sprite` with a random start and velocity drawn from `seed`."""
    rng = np.random.default_rng(seed)
    max_position = CANVAS_SIZE - SPRITE_SIZE
    start = rng.integers(0, max_position + 1, size=2)
    speed = rng.integers(1, MAX_SPEED + 1, size=2)
    velocity = speed * rng.choice(np.array([-1, 1]), size=2)
    positions = bounce_trajectory(start, velocity, num_frames, max_position)
    return {"video": render_clip(sprite, positions, CANVAS_SIZE), "position": positions}


@dataclasses.dataclass
class MovingDigitsConfig(tfds.core.BuilderConfig):
    num_frames: int = 8


class MovingDigits(tfds.core.GeneratorBasedBuilder):
    """Bouncing 8x8 digits on a 32x32 canvas, as a TFDS dataset named `moving_digits`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 2,600 / 200 / 297 clips."}
    BUILDER_CONFIGS = [
        MovingDigitsConfig(name="8_frames", description="8-frame clips", num_frames=8),
        MovingDigitsConfig(name="16_frames", description="16-frame clips", num_frames=16),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        """A grey video, its digit label and the sprite's top-left corner in every frame."""
        num_frames = self.builder_config.num_frames
        return self.dataset_info_from_configs(
            description=(
                "One 8x8 sklearn digit bouncing with constant integer velocity in a 32x32 frame."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "video": tfds.features.Video(shape=(num_frames, CANVAS_SIZE, CANVAS_SIZE, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                    "position": tfds.features.Tensor(shape=(num_frames, 2), dtype=np.int32),
                }
            ),
            supervised_keys=("video", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        """The digits' file-order splits, each digit animated `CLIPS_PER_DIGIT[split]` times."""
        del dl_manager  # Built from the digits inside scikit-learn.
        sprites, labels = digits.digits_as_uint8()
        return {
            split: self._generate_examples(split, sprites, labels, start, stop)
            for split, (start, stop) in digits.SPLIT_RANGES.items()
        }

    def _generate_examples(
        self, split: str, sprites: np.ndarray, labels: np.ndarray, start: int, stop: int
    ) -> Iterator[tuple[int, dict]]:
        """Yields `(key, example)`, clip-major so each clip of a split shows every digit once."""
        num_frames = self.builder_config.num_frames
        key = 0
        for clip_index in range(CLIPS_PER_DIGIT[split]):
            for digit_index in range(start, stop):
                seed = (_BASE_SEED, _SPLIT_SEEDS[split], digit_index, clip_index)
                clip = make_clip(sprites[digit_index], num_frames, seed)
                yield key, {**clip, "label": int(labels[digit_index])}
                key += 1
