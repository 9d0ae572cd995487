"""Input pipeline: TFDS datasets to globally sharded `jax.Array` batches.

Every trainer, evaluator and tool reads data through this module, configured by the `data` part
of an experiment config (an `ml_collections.ConfigDict` or any object with these attributes;
missing or `None` fields take the defaults in `DEFAULTS`):

  name            TFDS name ('mnist', 'cifar10:3.0.2', 'digits') or 'image_folder:/some/path'
  data_dir        where prepared datasets live; None -> $TFDS_DATA_DIR -> ~/tensorflow_datasets
  image_size      square side to crop and resize to; None keeps the native size
  channels        1 or 3 to convert grey <-> colour; None keeps the native channels
  train_split, eval_split, test_split   TFDS split names (sub-splits like 'train[:90%]' work)
  shuffle_buffer  examples held by the shuffle buffer (they are held still encoded)
  image_key, label_key   feature names in the TFDS dataset
  modality        'auto' (from the dataset's features), 'image', 'audio', 'video' or 'text';
                  audio, video and text read further fields, documented in `data/audio.py`,
                  `data/video.py` and `data/text.py`

Batches are dicts with `image` float32 in [-1, 1] `[B, H, W, C]` (channels-last, whatever the
source feature is called; the same key holds audio `[B, T, C]` and video `[B, T, H, W, C]`, and
text arrives as `tokens` int32 `[B, L]`), `label` int32 `[B]` when the dataset has labels,
and, for evaluation, `mask` float32 `[B]`. Each process reads its own slice of a split
(`tfds.split_for_jax_process`) and the local batches are assembled into global arrays with
`jax.make_array_from_process_local_data`, so the same code runs on one CPU or a pod.

TensorFlow is only an input library here: importing this module hides accelerators from it so it
never reserves GPU/TPU memory that JAX needs.
"""

import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from mmgen_jax.data import builders
from mmgen_jax.data.builders import image_folder


def _hide_accelerators_from_tensorflow() -> None:
    """Makes GPUs and TPUs invisible to TensorFlow (must run before TF initialises devices)."""
    for device_type in ("GPU", "TPU"):
        try:
            tf.config.set_visible_devices([], device_type)
        except RuntimeError:  # TF already created its devices; too late to change them.
            logging.warning(
                "TensorFlow already initialised %s devices; it may hold memory.", device_type
            )


_hide_accelerators_from_tensorflow()

IMAGE_FOLDER_PREFIX = "image_folder:"
# Used for `image_folder:` datasets when the config leaves the size or channels unset.
IMAGE_FOLDER_DEFAULT_SIZE = 64
IMAGE_FOLDER_DEFAULT_CHANNELS = 3
DEFAULTS = {
    "data_dir": None,
    "image_size": None,
    "channels": None,
    "train_split": "train",
    "eval_split": "validation",
    "test_split": "test",
    "shuffle_buffer": 10_000,
    "host_sharding": "split",
    "image_key": "image",
    "label_key": "label",
    "modality": "auto",  # 'image', 'audio', 'video', 'text' or 'auto' (from the features)
    "audio_key": "audio",
    "text_key": "text",
}


def _field(data_config: ml_collections.ConfigDict, name: str) -> Any:
    """Reads `data_config.<name>`, falling back to `DEFAULTS` when it is missing or None."""
    value = getattr(data_config, name, None)
    return DEFAULTS[name] if value is None else value


def data_dir_of(data_config: ml_collections.ConfigDict) -> str:
    """Resolves the TFDS data directory the way TFDS does, so error messages can name it."""
    data_dir = (
        _field(data_config, "data_dir")
        or os.environ.get("TFDS_DATA_DIR")
        or os.path.join("~", "tensorflow_datasets")
    )
    return os.path.expanduser(data_dir)


def _is_project_builder(builder: tfds.core.DatasetBuilder) -> bool:
    """True for builders defined in `mmgen_jax.data.builders` (they prepare offline)."""
    return type(builder).__module__.startswith(builders.__name__ + ".")


def get_builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """Returns the prepared TFDS builder for `data_config.name`, preparing it if needed.

    Project builders (digits, image folders, ...) are prepared offline on first use. Other TFDS
    datasets are prepared by `download_and_prepare` if they are missing from the data dir; when
    that fails (e.g. no network) the ValueError says which dataset and directory, and how to fix it.
    """
    name = getattr(data_config, "name", None)
    if not name:
        raise ValueError("data_config.name must name a TFDS dataset or 'image_folder:<path>'.")
    data_dir = data_dir_of(data_config)
    if name.startswith(IMAGE_FOLDER_PREFIX):
        builder = image_folder.image_folder_builder(
            name.removeprefix(IMAGE_FOLDER_PREFIX),
            image_size=_field(data_config, "image_size") or IMAGE_FOLDER_DEFAULT_SIZE,
            channels=_field(data_config, "channels") or IMAGE_FOLDER_DEFAULT_CHANNELS,
            data_dir=data_dir,
        )
    else:
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.DatasetNotFoundError as error:
            raise ValueError(
                f"Unknown dataset {name!r}: it is neither a TFDS dataset nor prepared in "
                f"{data_dir!r}. Use a name from `tfds.list_builders()`, a project builder "
                f"(e.g. 'digits'), or '{IMAGE_FOLDER_PREFIX}<path>'."
            ) from error
    if builder.is_prepared():
        return builder
    if _is_project_builder(builder):
        builder.download_and_prepare()  # Offline; its own errors name the offending input.
        return builder
    try:
        builder.download_and_prepare()
    except Exception as error:  # Network, manual-download and checksum failures all land here.
        raise ValueError(
            f"Dataset {name!r} is not prepared in data_dir {data_dir!r} and preparing it failed "
            f"({type(error).__name__}: {error}). Prepare it on a machine with network access, "
            f"e.g. `tfds build {name} --data_dir={data_dir}`, then copy the "
            f"{os.path.join(data_dir, builder.name)!r} directory here."
        ) from error
    return builder


class Layout(Protocol):
    """How raw TFDS examples of one modality become model inputs.

    One layout per modality (images here; audio, video and text in `data/audio.py`,
    `data/video.py`, `data/text.py`), derived once from the config and the dataset's features.
    """

    output_shape: tuple[int, ...]  # per-example shape of the main array after preprocessing
    num_classes: int | None

    def decoders(self) -> dict | None:
        """TFDS decoders for `as_dataset` (e.g. skip image decoding until after shuffling)."""

    def preprocess(self, example: dict) -> dict[str, tf.Tensor]:
        """One raw example -> `{'image' or 'tokens': ..., 'label': ...}` of static shape."""

    def extra_info(self) -> dict[str, Any]:
        """Entries added to `dataset_info` (e.g. `sample_rate`, `vocab_size`)."""


MODALITIES = ("image", "audio", "video", "text")


def _infer_modality(data_config: ml_collections.ConfigDict, info: tfds.core.DatasetInfo) -> str:
    """The modality of the dataset's main feature, unless `data.modality` names one."""
    modality = _field(data_config, "modality")
    if modality != "auto":
        if modality not in MODALITIES:
            raise ValueError(f"data.modality={modality!r} is not 'auto' or one of {MODALITIES}")
        return modality
    for key, feature in info.features.items():
        if isinstance(feature, tfds.features.Audio) and key == _field(data_config, "audio_key"):
            return "audio"
        if isinstance(feature, tfds.features.Video):
            return "video"
        if isinstance(feature, tfds.features.Text) and key == _field(data_config, "text_key"):
            return "text"
    return "image"


def make_layout(
    data_config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder
) -> Layout:
    """The layout for the dataset's modality, checked against its features."""
    modality = _infer_modality(data_config, builder.info)
    if modality == "audio":
        from mmgen_jax.data import audio

        return audio.make_layout(data_config, builder)
    if modality == "video":
        from mmgen_jax.data import video

        return video.make_layout(data_config, builder)
    if modality == "text":
        from mmgen_jax.data import text

        return text.make_layout(data_config, builder)
    return _example_layout(data_config, builder.info)


@dataclasses.dataclass(frozen=True)
class _ExampleLayout:
    """How raw TFDS image examples become model inputs (the image `Layout`)."""

    image_key: str
    label_key: str | None  # None when the dataset has no such feature (unlabelled data).
    image_feature: tfds.features.FeatureConnector
    defer_decoding: bool  # Images stay encoded through shuffle/skip; decoded in `preprocess`.
    native_channels: int | None
    resize_to: int | None  # Square side to crop and resize to; None keeps the native size.
    output_shape: tuple[int, ...]  # Per-example image shape after preprocessing.
    num_classes: int | None

    def decoders(self) -> dict | None:
        return {self.image_key: tfds.decode.SkipDecoding()} if self.defer_decoding else None

    def preprocess(self, example: dict) -> dict[str, tf.Tensor]:
        return _make_preprocess(self)(example)

    def extra_info(self) -> dict[str, Any]:
        return {}


def _example_layout(
    data_config: ml_collections.ConfigDict, info: tfds.core.DatasetInfo
) -> _ExampleLayout:
    """Checks the config against the dataset's features and derives the output layout."""
    image_key, label_key = _field(data_config, "image_key"), _field(data_config, "label_key")
    if image_key not in info.features:
        raise ValueError(
            f"Dataset {info.full_name!r} has no feature {image_key!r} (data_config.image_key); "
            f"its features are {sorted(info.features.keys())}."
        )
    image_feature = info.features[image_key]
    if np.dtype(image_feature.np_dtype) not in (np.uint8, np.float32):
        raise ValueError(
            f"Feature {image_key!r} has dtype {image_feature.np_dtype}; the pipeline expects "
            "uint8 images or float32 signals."
        )
    native_shape = tuple(image_feature.shape)  # e.g. (H, W, C) images, (T, H, W, C) video.
    image_size, channels = _field(data_config, "image_size"), _field(data_config, "channels")
    if (image_size or channels) and len(native_shape) not in (3, 4):
        raise ValueError(
            f"image_size/channels apply to [H, W, C] images or [T, H, W, C] video, but feature "
            f"{image_key!r} has shape {native_shape}."
        )
    output_shape = native_shape
    if len(native_shape) >= 3:
        spatial = (image_size, image_size) if image_size else native_shape[-3:-1]
        output_shape = (*native_shape[:-3], *spatial, channels or native_shape[-1])
    if None in output_shape:
        raise ValueError(
            f"Feature {image_key!r} of {info.full_name!r} has variable shape {native_shape}; set "
            "data_config.image_size (and channels) so batches have a static shape."
        )
    resize_to = image_size if image_size and native_shape[-3:-1] != (image_size,) * 2 else None
    label_feature = info.features[label_key] if label_key in info.features else None
    return _ExampleLayout(
        image_key=image_key,
        label_key=label_key if label_feature is not None else None,
        image_feature=image_feature,
        defer_decoding=isinstance(image_feature, tfds.features.Image),
        native_channels=native_shape[-1] if len(native_shape) >= 3 else None,
        resize_to=resize_to,
        output_shape=output_shape,
        num_classes=getattr(label_feature, "num_classes", None),
    )


def convert_channels(image: tf.Tensor, native: int | None, target: int) -> tf.Tensor:
    """Converts `[..., native]` channels to `[..., target]` (grey <-> RGB, RGBA -> RGB)."""
    if native == target:
        return image
    if native == 1 and target == 3:
        return tf.image.grayscale_to_rgb(image)
    if native in (3, 4) and target in (1, 3):
        rgb = image[..., :3]  # Drops alpha.
        return tf.image.rgb_to_grayscale(rgb) if target == 1 else rgb
    raise ValueError(f"Cannot convert images with {native} channels to {target} channels.")


def center_crop_and_resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """Crops `[..., H, W, C]` to its central square, then resizes to `[..., size, size, C]`."""
    height, width = tf.shape(image)[-3], tf.shape(image)[-2]
    side = tf.minimum(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image = image[..., top : top + side, left : left + side, :]
    # Antialiasing matters when shrinking; bicubic can overshoot, hence the clip.
    image = tf.image.resize(image, (size, size), method="bicubic", antialias=True)
    return tf.clip_by_value(image, -1.0, 1.0)


def _make_preprocess(layout: _ExampleLayout) -> Callable[[dict], dict[str, tf.Tensor]]:
    """Returns the per-example map: decode, scale to [-1, 1], convert channels, resize."""

    def preprocess(example: dict) -> dict[str, tf.Tensor]:
        image = example[layout.image_key]
        if layout.defer_decoding:
            image = layout.image_feature.decode_example(image)
        if image.dtype == tf.uint8:
            image = tf.cast(image, tf.float32) / 127.5 - 1.0
        else:  # float32 signals (e.g. audio) are taken to be in [-1, 1] already.
            image = tf.cast(image, tf.float32)
        if len(layout.output_shape) >= 3:
            image = convert_channels(image, layout.native_channels, layout.output_shape[-1])
        if layout.resize_to is not None:
            image = center_crop_and_resize(image, layout.resize_to)
        outputs = {"image": tf.ensure_shape(image, layout.output_shape)}
        if layout.label_key is not None:
            outputs["label"] = tf.cast(example[layout.label_key], tf.int32)
        return outputs

    return preprocess


def _read_split(
    builder: tfds.core.DatasetBuilder,
    split: Any,
    layout: Layout,
    *,
    shuffle_seed: int | None = None,
    autocache: bool = True,
) -> tf.data.Dataset:
    """Reads raw examples of `split` (a name or TFDS sub-split), files shuffled iff a seed is set.

    Images are left encoded (`layout.decoders()`), so shuffle buffers hold compressed bytes and
    skipped examples are never decoded. `autocache=False` stops TFDS from caching a small
    dataset in memory (for reads of a prefix, which would leave the cache half filled).
    """
    decoders = layout.decoders()
    read_config = tfds.ReadConfig(
        try_autocache=autocache,
        shuffle_seed=shuffle_seed,
        shuffle_reshuffle_each_iteration=True,
        # Ordered datasets (`disable_shuffling=True`, e.g. digits) refuse shuffled files unless
        # told that the order is not needed, which is the case for training.
        enable_ordering_guard=shuffle_seed is None,
    )
    return builder.as_dataset(
        split=split,
        shuffle_files=shuffle_seed is not None,
        decoders=decoders,
        read_config=read_config,
    )


def _num_examples(dataset: tf.data.Dataset) -> int:
    """Size of a dataset read by `_read_split` (TFDS asserts it, so nothing is read)."""
    count = int(dataset.cardinality())
    if count < 0:  # tf.data.UNKNOWN_CARDINALITY or INFINITE_CARDINALITY
        raise ValueError(f"Cannot tell how many examples {dataset} holds (cardinality {count}).")
    return count


def _deterministic(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Forces a deterministic element order even with parallel map/interleave."""
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)


def _num_batch_shards(sharding: jax.sharding.NamedSharding) -> int:
    """Number of pieces the sharding cuts the batch (leading) dimension into."""
    batch_axes = sharding.spec[0] if len(sharding.spec) else None
    if batch_axes is None:
        return 1
    if isinstance(batch_axes, str):
        batch_axes = (batch_axes,)
    return math.prod(sharding.mesh.shape[axis] for axis in batch_axes)


def process_batch_size(global_batch_size: int, sharding: jax.sharding.NamedSharding) -> int:
    """This process's share of the global batch; checks that the batch splits evenly."""
    process_count = jax.process_count()
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by "
            f"jax.process_count()={process_count}."
        )
    num_shards = _num_batch_shards(sharding)
    if global_batch_size % num_shards:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by the {num_shards} shards "
            f"of the batch dimension (spec {sharding.spec}, mesh {dict(sharding.mesh.shape)})."
        )
    return global_batch_size // process_count


def global_batch(
    local_batch: dict[str, np.ndarray],
    sharding: jax.sharding.NamedSharding,
    global_batch_size: int,
) -> dict[str, jax.Array]:
    """This process's rows of a batch (`{name: [local_B, ...]}`) as global arrays sharded like
    `sharding` along the batch dimension."""
    arrays = {}
    for key, local_array in local_batch.items():
        # `label` and `mask` are rank 1: keep only the batch part of the spec.
        array_sharding = jax.sharding.NamedSharding(
            sharding.mesh, jax.sharding.PartitionSpec(*sharding.spec[: local_array.ndim])
        )
        arrays[key] = jax.make_array_from_process_local_data(
            array_sharding, local_array, (global_batch_size, *local_array.shape[1:])
        )
    return arrays


def _global_batches(
    dataset: tf.data.Dataset, sharding: jax.sharding.NamedSharding, global_batch_size: int
) -> Iterator[dict[str, jax.Array]]:
    """Turns each process-local numpy batch into global arrays sharded like `sharding`."""
    for local_batch in dataset.as_numpy_iterator():
        yield global_batch(local_batch, sharding, global_batch_size)


def dataset_info(data_config: ml_collections.ConfigDict) -> dict:
    """Describes the preprocessed dataset (preparing it if needed).

    Returns:
      `{'shape': per-example image shape after preprocessing (channels-last tuple),
        'num_classes': int or None, 'num_examples': {split name: int}}`.
    """
    builder = get_builder(data_config)
    layout = make_layout(data_config, builder)
    return {
        "shape": layout.output_shape,
        "num_classes": layout.num_classes,
        "num_examples": {name: split.num_examples for name, split in builder.info.splits.items()},
        **layout.extra_info(),
    }


def make_train_iterator(
    data_config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    sharding: jax.sharding.NamedSharding,
    seed: int,
    start_step: int = 0,
) -> Iterator[dict[str, jax.Array]]:
    """Returns an endless iterator of shuffled global training batches.

    The order is a pure function of (dataset, seed, process count, global batch size): files and
    examples are shuffled with `seed`, reshuffled each epoch, and `start_step=k` yields exactly
    the batches a fresh iterator yields from its k-th on, so a resumed run sees the same data.
    Resuming replays (reads, without decoding) the `k * batch` skipped examples.

    `data.host_sharding` says how processes share the work:
      'split' (default): each process reads only its slice of the split
        (`tfds.split_for_jax_process`); least I/O, but the order depends on the process count.
      'batch': every process reads the whole split in the same order and keeps its rows of each
        global batch; the global batches are the same for any number of processes (a run on
        several hosts reproduces a single-host run), for datasets small enough to read on
        every host.

    Yields:
      `{'image': float32 [global_batch_size, *shape] in [-1, 1], 'label': int32
      [global_batch_size]}` as global `jax.Array`s sharded like `sharding` (batch dimension).
    """
    local_batch_size = process_batch_size(global_batch_size, sharding)
    builder = get_builder(data_config)
    layout = make_layout(data_config, builder)
    host_sharding = _field(data_config, "host_sharding")
    if host_sharding not in ("split", "batch"):
        raise ValueError(f"data.host_sharding={host_sharding!r} is not 'split' or 'batch'")
    split = _field(data_config, "train_split")
    if host_sharding == "split":
        split = tfds.split_for_jax_process(split)
    dataset = _read_split(builder, split, layout, shuffle_seed=seed)
    dataset = dataset.shuffle(
        _field(data_config, "shuffle_buffer"), seed=seed, reshuffle_each_iteration=True
    )
    # Skipping examples of the endless stream equals skipping whole batches (no remainder is
    # dropped) and happens before decoding, so it is cheap.
    per_step = local_batch_size if host_sharding == "split" else global_batch_size
    dataset = dataset.repeat().skip(start_step * per_step)
    if host_sharding == "batch":  # keep this process's rows of every global batch
        start = jax.process_index() * local_batch_size
        dataset = dataset.batch(global_batch_size, drop_remainder=True)
        dataset = dataset.map(
            lambda batch: tf.nest.map_structure(
                lambda x: x[start : start + local_batch_size], batch
            )
        ).unbatch()
    dataset = dataset.map(layout.preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(local_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return _global_batches(_deterministic(dataset), sharding, global_batch_size)


def make_eval_iterator(
    data_config: ml_collections.ConfigDict,
    split: str,
    *,
    global_batch_size: int,
    sharding: jax.sharding.NamedSharding,
) -> Iterator[dict[str, jax.Array]]:
    """Returns an iterator over one pass of `split`, padded so metrics can be exact.

    Every process yields the same number of batches (collectives inside `jit` need all
    processes to take part): `ceil(largest per-process count / local batch)`. Slots past the end
    of a process's data hold zeros with `mask` 0; summing `metric * mask` and dividing by
    `sum(mask)` gives the exact mean over the split.

    Yields:
      `{'image': float32 [global_batch_size, *shape], 'label': int32 [global_batch_size],
      'mask': float32 [global_batch_size]}` as global `jax.Array`s sharded like `sharding`.
    """
    local_batch_size = process_batch_size(global_batch_size, sharding)
    builder = get_builder(data_config)
    layout = make_layout(data_config, builder)
    # `even_splits` hands the remainder out from the first process on, so process 0 has the most.
    first_process_split = tfds.split_for_jax_process(
        split, process_index=0, process_count=jax.process_count()
    )
    largest_share = _num_examples(_read_split(builder, first_process_split, layout))
    num_batches = math.ceil(largest_share / local_batch_size)
    preprocess = layout.preprocess
    dataset = _read_split(builder, tfds.split_for_jax_process(split), layout)
    dataset = dataset.map(
        lambda example: {**preprocess(example), "mask": tf.constant(1.0)},
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    padding = tf.nest.map_structure(
        lambda spec: tf.zeros(spec.shape, spec.dtype), dataset.element_spec
    )
    dataset = dataset.concatenate(tf.data.Dataset.from_tensors(padding).repeat())
    dataset = dataset.batch(local_batch_size, drop_remainder=True).take(num_batches)
    return _global_batches(
        _deterministic(dataset.prefetch(tf.data.AUTOTUNE)), sharding, global_batch_size
    )


def load_split_numpy(
    data_config: ml_collections.ConfigDict, split: str, max_examples: int | None = None
) -> dict[str, np.ndarray]:
    """Loads a whole preprocessed split into memory, in file order (for small datasets), or
    only its first `max_examples` (only those are read).

    Returns:
      `{'image': float32 [N, *shape] in [-1, 1], 'label': int32 [N]}` (no `label` when the
      dataset has none).
    """
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples={max_examples} must be >= 1 (or None: the whole split)")
    builder = get_builder(data_config)
    layout = make_layout(data_config, builder)
    dataset = _read_split(builder, split, layout, autocache=max_examples is None)
    if max_examples is not None:
        dataset = dataset.take(max_examples)
    num_examples = _num_examples(dataset)
    if num_examples == 0:
        raise ValueError(f"Split {split!r} of {builder.info.full_name!r} is empty.")
    dataset = dataset.map(layout.preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return next(_deterministic(dataset.batch(num_examples)).as_numpy_iterator())
