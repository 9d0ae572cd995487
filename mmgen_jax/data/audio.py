"""Audio layout: TFDS audio examples -> `image` float32 `[T, C]` in [-1, 1] plus `label`.

Used by `pipeline.make_layout` when `data.modality` is 'audio' (or 'auto' and the dataset's
`data.audio_key` feature is a `tfds.features.Audio`). Data config fields it reads (unset or None
fields take the defaults in `AUDIO_DEFAULTS`):

  audio_key     feature holding the waveform, `[T]` (mono) or `[T, C]`; default 'audio'
  label_key     feature holding the class label; a '/' path reaches nested features
                (NSynth: 'pitch', 'instrument/family'); missing -> unlabelled
  sample_rate   expected sampling rate in Hz; a dataset whose feature rate differs is an error
                naming both rates (no resampling). None accepts the dataset's rate. A plain
                `Tensor` feature has no rate of its own: then this field is required.
  num_samples   window length T: every clip is cropped to its first T samples. None takes the
                feature's fixed length (datasets of variable-length clips must set it).
  short_clips   'pad' (default): clips shorter than the window are padded with zeros at the
                end; 'error': such a clip stops the input pipeline with an error naming its
                length.
  channels      output channels C; None keeps the native count. The native count must match,
                except that stereo (or any multi-channel) input becomes mono by averaging the
                channels when `channels=1`.

Sample values: int16 PCM is divided by 2^15, int32 by 2^31, int64 (how some TFDS audio datasets
store 16-bit PCM) by 2^15; float input is taken as [-1, 1] already. Values are clipped to
[-1, 1].

Real datasets by name: `speech_commands` (int16, variable length, 16 kHz; set
`num_samples=16000` for 1 s), `nsynth` (float32, 64,000 samples at 16 kHz; label by
`label_key`, e.g. 'pitch' or 'instrument/family'), and the offline `notes` builder.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

AUDIO_DEFAULTS = {
    "audio_key": "audio",
    "label_key": "label",
    "sample_rate": None,
    "num_samples": None,
    "short_clips": "pad",
    "channels": None,
}
SHORT_CLIP_POLICIES = ("pad", "error")
# Divisor that maps the integer dtype's full scale to [-1, 1].
_INTEGER_SCALE = {np.int16: 2.0**15, np.int32: 2.0**31, np.int64: 2.0**15}


def _field(data_config: ml_collections.ConfigDict, name: str) -> Any:
    value = getattr(data_config, name, None)
    return AUDIO_DEFAULTS[name] if value is None else value


def _nested_feature(features: tfds.features.FeaturesDict, path: str):
    """The feature at a '/'-separated path, or None."""
    feature = features
    for part in path.split("/"):
        if not isinstance(feature, tfds.features.FeaturesDict) or part not in feature:
            return None
        feature = feature[part]
    return feature


def _nested_value(example: dict, path: str):
    for part in path.split("/"):
        example = example[part]
    return example


@dataclasses.dataclass(frozen=True)
class AudioLayout:
    """The audio `Layout` (see `pipeline.Layout`)."""

    audio_key: str
    label_key: str | None
    native_dtype: np.dtype
    native_channels: int  # 1 for a [T] feature
    num_samples: int
    channels: int
    sample_rate: int
    short_clips: str
    num_classes: int | None

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.num_samples, self.channels)

    def decoders(self) -> dict | None:
        return None

    def extra_info(self) -> dict[str, Any]:
        return {"sample_rate": int(self.sample_rate)}

    def preprocess(self, example: dict) -> dict[str, tf.Tensor]:
        audio = example[self.audio_key]  # [T] or [T, C]
        scale = _INTEGER_SCALE.get(np.dtype(self.native_dtype).type)
        audio = tf.cast(audio, tf.float32)
        if scale is not None:
            audio = audio / scale
        audio = tf.clip_by_value(audio, -1.0, 1.0)
        if audio.shape.rank == 1:
            audio = audio[:, None]  # [T, 1]
        if self.native_channels != self.channels:  # multi-channel -> mono
            audio = tf.reduce_mean(audio, axis=-1, keepdims=True)
        audio = audio[: self.num_samples]
        length = tf.shape(audio)[0]
        checks = []
        if self.short_clips == "error":
            checks.append(
                tf.debugging.assert_equal(
                    length,
                    self.num_samples,
                    message=(
                        f"audio clip shorter than data.num_samples={self.num_samples} with "
                        "data.short_clips='error'"
                    ),
                )
            )
        else:
            audio = tf.pad(audio, [[0, self.num_samples - length], [0, 0]])
        # The check runs before the shape assertion, whose error would not say what is wrong.
        with tf.control_dependencies(checks):
            audio = tf.identity(audio)
        outputs = {"image": tf.ensure_shape(audio, self.output_shape)}
        if self.label_key is not None:
            outputs["label"] = tf.cast(_nested_value(example, self.label_key), tf.int32)
        return outputs


def make_layout(
    data_config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder
) -> AudioLayout:
    """Checks the config against the dataset's audio feature and derives the layout."""
    info = builder.info
    audio_key = _field(data_config, "audio_key")
    if audio_key not in info.features:
        raise ValueError(
            f"Dataset {info.full_name!r} has no feature {audio_key!r} (data.audio_key); its "
            f"features are {sorted(info.features.keys())}."
        )
    feature = info.features[audio_key]
    shape = tuple(feature.shape)
    if len(shape) not in (1, 2):
        raise ValueError(f"Audio feature {audio_key!r} has shape {shape}; expected [T] or [T, C].")
    dtype = np.dtype(feature.np_dtype)
    if dtype.type not in _INTEGER_SCALE and dtype not in (np.float32, np.float64):
        raise ValueError(f"Audio feature {audio_key!r} has unsupported dtype {dtype}.")

    feature_rate = getattr(feature, "sample_rate", None)
    wanted_rate = _field(data_config, "sample_rate")
    if wanted_rate is not None and feature_rate is not None and feature_rate != wanted_rate:
        raise ValueError(
            f"data.sample_rate={wanted_rate} Hz but {info.full_name!r} feature {audio_key!r} is "
            f"sampled at {feature_rate} Hz; resampling is not supported: set data.sample_rate="
            f"{feature_rate} (or leave it unset)."
        )
    sample_rate = wanted_rate or feature_rate
    if not sample_rate:
        raise ValueError(
            f"Audio feature {audio_key!r} of {info.full_name!r} declares no sample rate; set "
            "data.sample_rate."
        )

    num_samples = _field(data_config, "num_samples") or shape[0]
    if num_samples is None:
        raise ValueError(
            f"Audio feature {audio_key!r} of {info.full_name!r} has variable length; set "
            "data.num_samples (the window, e.g. 16000 for 1 s at 16 kHz)."
        )
    short_clips = _field(data_config, "short_clips")
    if short_clips not in SHORT_CLIP_POLICIES:
        raise ValueError(f"data.short_clips={short_clips!r} is not one of {SHORT_CLIP_POLICIES}")

    native_channels = shape[1] if len(shape) == 2 else 1
    if native_channels is None:
        raise ValueError(f"Audio feature {audio_key!r} has a variable channel count {shape}.")
    channels = _field(data_config, "channels") or native_channels
    if channels != native_channels and channels != 1:
        raise ValueError(
            f"data.channels={channels} but feature {audio_key!r} has {native_channels} channels; "
            "only the conversion to mono (channels=1, by averaging) is supported."
        )

    label_key = _field(data_config, "label_key")
    label_feature = _nested_feature(info.features, label_key)
    return AudioLayout(
        audio_key=audio_key,
        label_key=label_key if label_feature is not None else None,
        native_dtype=dtype,
        native_channels=native_channels,
        num_samples=int(num_samples),
        channels=int(channels),
        sample_rate=int(sample_rate),
        short_clips=short_clips,
        num_classes=getattr(label_feature, "num_classes", None),
    )
