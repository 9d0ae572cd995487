"""Video layout: TFDS `Video` features -> clips `image` float32 `[T, H, W, C]` in [-1, 1].

`pipeline.make_layout` dispatches here for datasets whose main feature is a
`tfds.features.Video` (or when `data.modality='video'`). Fields of the `data` config read here,
on top of the shared ones in `pipeline.py` (missing or None fields take `DEFAULTS` below):

  video_key    the Video feature ('video'; 'image_sequence' for moving_mnist, 'image_main' for
               bair_robot_pushing_small)
  num_frames   keep the first N frames of every clip; None keeps the feature's static length
               (required for variable-length features such as ucf101)
  short_clips  what to do with clips shorter than `num_frames`: 'error' (default; a clear error
               when the feature is statically too short, a tf.data error naming the clip length
               otherwise) or 'pad' (repeat the last frame)
  image_size   square side per frame: each frame is cropped to its central square and resized
  channels     1 or 3 (grey <-> colour per frame)
  fps          frames per second written to `dataset_info` (GIFs play at this rate); None uses
               `KNOWN_FPS` for the dataset, else `DEFAULT_FPS`
  label_key    used when the dataset has such a feature (ucf101, moving_digits); unlabelled
               datasets (moving_mnist, bair_robot_pushing_small) give no `label`

Frames stay PNG-encoded through the shuffle buffer and are decoded in `preprocess`, so a buffer
of long, large clips (ucf101) holds compressed bytes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from mmgen_jax.data import pipeline

DEFAULTS = {
    "video_key": "video",
    "num_frames": None,
    "short_clips": "error",
    "fps": None,
}
SHORT_CLIPS = ("error", "pad")
DEFAULT_FPS = 8.0
# Frame rates of the datasets this layout was written for (TFDS names, without version).
KNOWN_FPS = {
    "moving_digits": 8.0,
    "moving_mnist": 10.0,
    "ucf101": 25.0,
    "bair_robot_pushing_small": 10.0,
}


def _field(data_config: ml_collections.ConfigDict, name: str) -> Any:
    """`data_config.<name>`, else this module's default, else the pipeline's."""
    value = getattr(data_config, name, None)
    if value is not None:
        return value
    return DEFAULTS[name] if name in DEFAULTS else pipeline.DEFAULTS.get(name)


@dataclasses.dataclass(frozen=True)
class VideoLayout:
    """How raw TFDS video examples become clips of static shape (the video `Layout`)."""

    video_key: str
    label_key: str | None  # None when the dataset has no such feature
    video_feature: tfds.features.Video
    num_frames: int
    pad_short_clips: bool
    native_channels: int
    resize_to: int | None  # square side per frame; None keeps the native frame size
    output_shape: tuple[int, ...]  # (T, H, W, C)
    num_classes: int | None
    fps: float

    def decoders(self) -> dict | None:
        return {self.video_key: tfds.decode.SkipDecoding()}

    def preprocess(self, example: dict) -> dict[str, tf.Tensor]:
        """One raw example -> `{'image': float32 [T, H, W, C] in [-1, 1], 'label': int32}`."""
        encoded = example[self.video_key]  # [T_native] PNG strings
        encoded = self._fix_length(encoded)  # [num_frames]
        frames = self.video_feature.decode_example(encoded)  # uint8 [T, H, W, C_native]
        clip = tf.cast(frames, tf.float32) / 127.5 - 1.0
        clip = pipeline.convert_channels(clip, self.native_channels, self.output_shape[-1])
        if self.resize_to is not None:
            clip = pipeline.center_crop_and_resize(clip, self.resize_to)
        outputs = {"image": tf.ensure_shape(clip, self.output_shape)}
        if self.label_key is not None:
            outputs["label"] = tf.cast(example[self.label_key], tf.int32)
        return outputs

    def _fix_length(self, encoded: tf.Tensor) -> tf.Tensor:
        """First `num_frames` entries; shorter clips are padded with their last frame or fail."""
        length = tf.shape(encoded)[0]
        checks = []
        if self.pad_short_clips:
            last = tf.repeat(encoded[-1:], tf.maximum(self.num_frames - length, 0))
            encoded = tf.concat([encoded, last], axis=0)
        else:
            checks.append(
                tf.debugging.assert_greater_equal(
                    length,
                    self.num_frames,
                    message=(
                        f"a clip of {self.video_key!r} is shorter than data.num_frames="
                        f"{self.num_frames}; set data.short_clips='pad' to repeat its last frame"
                    ),
                )
            )
        # The check runs before the shape assertion, whose error would not say what is wrong.
        with tf.control_dependencies(checks):
            encoded = tf.identity(encoded[: self.num_frames])
        return tf.ensure_shape(encoded, (self.num_frames,))

    def extra_info(self) -> dict[str, Any]:
        return {"fps": self.fps}


def make_layout(
    data_config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder
) -> VideoLayout:
    """Checks the config against the dataset's Video feature and derives the clip layout."""
    info = builder.info
    video_key = _field(data_config, "video_key")
    feature = info.features[video_key] if video_key in info.features else None
    if not isinstance(feature, tfds.features.Video):
        videos = [k for k, f in info.features.items() if isinstance(f, tfds.features.Video)]
        raise ValueError(
            f"Dataset {info.full_name!r} has no Video feature {video_key!r} (data.video_key); "
            f"its Video features are {videos}."
        )
    native_length, height, width, native_channels = tuple(feature.shape)
    short_clips = _field(data_config, "short_clips")
    if short_clips not in SHORT_CLIPS:
        raise ValueError(f"data.short_clips={short_clips!r} is not one of {SHORT_CLIPS}")
    num_frames = _field(data_config, "num_frames") or native_length
    if num_frames is None:
        raise ValueError(
            f"Feature {video_key!r} of {info.full_name!r} has a variable number of frames; set "
            "data.num_frames so batches have a static shape."
        )
    if num_frames < 1:
        raise ValueError(f"data.num_frames={num_frames} must be positive")
    if short_clips == "error" and native_length is not None and native_length < num_frames:
        raise ValueError(
            f"data.num_frames={num_frames} but every clip of {video_key!r} in "
            f"{info.full_name!r} has {native_length} frames; lower it or set "
            "data.short_clips='pad'."
        )
    image_size, channels = _field(data_config, "image_size"), _field(data_config, "channels")
    if channels not in (None, 1, 3):
        raise ValueError(f"data.channels={channels!r} must be 1 or 3")
    if not image_size and (height is None or width is None):
        raise ValueError(
            f"Feature {video_key!r} of {info.full_name!r} has variable frame size; set "
            "data.image_size."
        )
    frame_shape = (image_size, image_size) if image_size else (height, width)
    label_key = _field(data_config, "label_key")
    label_feature = info.features[label_key] if label_key in info.features else None
    fps = _field(data_config, "fps") or KNOWN_FPS.get(info.name, DEFAULT_FPS)
    return VideoLayout(
        video_key=video_key,
        label_key=label_key if label_feature is not None else None,
        video_feature=feature,
        num_frames=int(num_frames),
        pad_short_clips=short_clips == "pad",
        native_channels=native_channels,
        resize_to=image_size if image_size and (height, width) != (image_size,) * 2 else None,
        output_shape=(int(num_frames), *frame_shape, channels or native_channels),
        num_classes=getattr(label_feature, "num_classes", None),
        fps=float(fps),
    )
