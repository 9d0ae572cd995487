"""Tests for mmgen_jax.data: the offline builders and the TFDS -> global jax.Array pipeline.

References are independent of the code under test: sklearn's arrays and numpy arithmetic for the
digits, hand-painted PNGs with known colours for image folders, and a simulated second process
(patched `jax.process_index` / `jax.process_count`) for the per-process split.
"""

import os

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

from mmgen_jax.data import builders, pipeline

GLOBAL_BATCH = 16


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A TFDS data dir private to this module (nothing is written under the home directory)."""
    return str(tmp_path_factory.mktemp("tensorflow_datasets"))


@pytest.fixture(scope="module")
def sharding():
    """Batch sharding over a mesh of the 8 fake CPU devices (see conftest.py)."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def _config(data_dir, name="digits", **overrides):
    """A partially filled data config, as an experiment config would hold it."""
    return ml_collections.ConfigDict(
        {"name": name, "data_dir": data_dir, "shuffle_buffer": 512, **overrides}
    )


def _take(iterator, count):
    """The first `count` batches as numpy dicts."""
    return [{key: np.asarray(value) for key, value in next(iterator).items()} for _ in range(count)]


def _simulate_process(monkeypatch, index, count):
    """Makes this process look like process `index` of `count`; global arrays stay local numpy."""
    monkeypatch.setattr(jax, "process_index", lambda: index)
    monkeypatch.setattr(jax, "process_count", lambda: count)
    monkeypatch.setattr(jax, "make_array_from_process_local_data", lambda s, local, shape: local)


# --- digits builder ---------------------------------------------------------------------------


def test_digits_builds_offline_with_file_order_splits(data_dir):
    builder = pipeline.get_builder(_config(data_dir))
    assert builder.is_prepared()
    assert str(builder.info.version) == "1.0.0"
    assert builder.data_path.is_relative_to(data_dir)
    sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
    assert sizes == {"train": 1300, "validation": 200, "test": 297}

    digits = load_digits()
    expected_pixels = np.floor(digits.images * 255 / 16 + 0.5).astype(np.uint8)  # all exact
    starts = {"train": 0, "validation": 1300, "test": 1500}
    for split, start in starts.items():
        stored = tfds.as_numpy(builder.as_dataset(split, batch_size=-1, shuffle_files=False))
        stop = start + sizes[split]
        np.testing.assert_array_equal(stored["image"][..., 0], expected_pixels[start:stop])
        np.testing.assert_array_equal(stored["label"], digits.target[start:stop])


def test_load_split_numpy_scales_to_unit_range(data_dir):
    digits = load_digits()
    test_split = pipeline.load_split_numpy(_config(data_dir), "test")
    assert test_split["image"].shape == (297, 8, 8, 1)
    assert test_split["image"].dtype == np.float32 and test_split["label"].dtype == np.int32
    expected = np.floor(digits.images[1500:] * 255 / 16 + 0.5) / 127.5 - 1.0
    np.testing.assert_allclose(test_split["image"][..., 0], expected, atol=1e-6)
    np.testing.assert_array_equal(test_split["label"], digits.target[1500:])
    # A prefix reads the first examples in the same order; more than the split holds is all.
    prefix = pipeline.load_split_numpy(_config(data_dir), "test", max_examples=5)
    np.testing.assert_array_equal(prefix["image"], test_split["image"][:5])
    np.testing.assert_array_equal(prefix["label"], test_split["label"][:5])
    everything = pipeline.load_split_numpy(_config(data_dir), "test", max_examples=10_000)
    assert everything["image"].shape[0] == 297
    with pytest.raises(ValueError, match="max_examples=0"):
        pipeline.load_split_numpy(_config(data_dir), "test", max_examples=0)


def test_dataset_info_and_resize_to_rgb(data_dir):
    info = pipeline.dataset_info(_config(data_dir))
    assert info == {
        "shape": (8, 8, 1),
        "num_classes": 10,
        "num_examples": {"train": 1300, "validation": 200, "test": 297},
    }
    config = _config(data_dir, image_size=16, channels=3)
    assert pipeline.dataset_info(config)["shape"] == (16, 16, 3)
    images = pipeline.load_split_numpy(config, "validation")["image"]
    assert images.shape == (200, 16, 16, 3)
    assert images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey copied to R, G, B
    # A blank (all-zero) border survives resizing: the digits' corner pixels are background.
    assert np.allclose(images[:, 0, 0], -1.0, atol=0.05)


# --- train iterator ---------------------------------------------------------------------------


def test_train_iterator_yields_sharded_global_batches(data_dir, sharding):
    iterator = pipeline.make_train_iterator(
        _config(data_dir), global_batch_size=GLOBAL_BATCH, sharding=sharding, seed=0
    )
    batch = next(iterator)
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (GLOBAL_BATCH, 8, 8, 1)
    assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
    assert batch["image"].sharding == sharding
    assert {shard.data.shape for shard in batch["image"].addressable_shards} == {(2, 8, 8, 1)}
    assert len(batch["image"].addressable_shards) == 8
    images, labels = np.asarray(batch["image"]), np.asarray(batch["label"])
    assert images.min() >= -1.0 and images.max() <= 1.0 and images.min() < images.max()
    assert labels.min() >= 0 and labels.max() < 10


def test_train_iterator_is_deterministic_and_resumable(data_dir, sharding):
    config = _config(data_dir)

    def batches(seed, start_step=0, count=3):
        iterator = pipeline.make_train_iterator(
            config,
            global_batch_size=GLOBAL_BATCH,
            sharding=sharding,
            seed=seed,
            start_step=start_step,
        )
        return _take(iterator, count)

    steps_per_epoch = 1300 // GLOBAL_BATCH  # 81 full batches, then the stream continues
    reference = batches(seed=7, count=steps_per_epoch + 3)
    again = batches(seed=7, count=3)
    for first, second in zip(reference[:3], again, strict=True):
        np.testing.assert_array_equal(first["image"], second["image"])
        np.testing.assert_array_equal(first["label"], second["label"])
    assert not np.array_equal(reference[0]["image"], batches(seed=8, count=1)[0]["image"])
    # Shuffling happens within epochs: the first 1300 examples are a permutation of the train
    # split (the 1300 train images are distinct), and the second epoch has a new order.
    stream = np.concatenate([batch["image"] for batch in reference])  # [84 * 16, 8, 8, 1]
    train_images = pipeline.load_split_numpy(config, "train")["image"]
    first_epoch = {image.tobytes() for image in stream[:1300]}
    assert first_epoch == {image.tobytes() for image in train_images}
    assert not np.array_equal(stream[1300:1316], stream[:16])
    for start_step in (2, steps_per_epoch + 1):  # within the first epoch and after it
        resumed = batches(seed=7, start_step=start_step, count=2)
        for offset, batch in enumerate(resumed):
            np.testing.assert_array_equal(batch["image"], reference[start_step + offset]["image"])
            np.testing.assert_array_equal(batch["label"], reference[start_step + offset]["label"])


def test_train_iterator_reads_only_this_process_share(data_dir, sharding, monkeypatch):
    train_images = pipeline.load_split_numpy(_config(data_dir), "train")["image"]
    halves = [
        {image.tobytes() for image in half} for half in (train_images[:650], train_images[650:])
    ]
    for process_index in (0, 1):
        _simulate_process(monkeypatch, process_index, 2)
        iterator = pipeline.make_train_iterator(
            _config(data_dir), global_batch_size=GLOBAL_BATCH, sharding=sharding, seed=0
        )
        for batch in _take(iterator, 4):
            assert batch["image"].shape == (GLOBAL_BATCH // 2, 8, 8, 1)
            assert {image.tobytes() for image in batch["image"]} <= halves[process_index]


def test_batch_size_must_divide_evenly(data_dir, sharding, monkeypatch):
    with pytest.raises(ValueError, match=r"global_batch_size=12 .*8 shards"):
        pipeline.make_train_iterator(
            _config(data_dir), global_batch_size=12, sharding=sharding, seed=0
        )
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    with pytest.raises(ValueError, match=r"global_batch_size=16 .*process_count\(\)=3"):
        pipeline.make_eval_iterator(
            _config(data_dir), "test", global_batch_size=16, sharding=sharding
        )


# --- eval iterator ----------------------------------------------------------------------------


def test_eval_iterator_covers_split_once_with_mask(data_dir, sharding):
    config = _config(data_dir)
    expected = pipeline.load_split_numpy(config, "test")
    batches = list(
        pipeline.make_eval_iterator(
            config, "test", global_batch_size=GLOBAL_BATCH, sharding=sharding
        )
    )
    assert len(batches) == -(-297 // GLOBAL_BATCH)  # 19
    assert batches[0]["mask"].sharding == sharding
    stacked = {key: np.concatenate([np.asarray(b[key]) for b in batches]) for key in batches[0]}
    real = stacked["mask"] == 1.0
    np.testing.assert_array_equal(real, np.arange(len(real)) < 297)
    np.testing.assert_array_equal(stacked["image"][real], expected["image"])
    np.testing.assert_array_equal(stacked["label"][real], expected["label"])
    assert not stacked["image"][~real].any() and not stacked["label"][~real].any()


def test_eval_split_across_two_processes(data_dir, sharding, monkeypatch):
    config = _config(data_dir)
    expected = pipeline.load_split_numpy(config, "test")
    per_process = []
    for process_index in (0, 1):
        _simulate_process(monkeypatch, process_index, 2)
        per_process.append(
            list(
                pipeline.make_eval_iterator(
                    config, "test", global_batch_size=GLOBAL_BATCH, sharding=sharding
                )
            )
        )
    # 297 examples -> 149 + 148; local batch 8 -> both processes run ceil(149 / 8) = 19 steps.
    assert [len(batches) for batches in per_process] == [19, 19]
    real_images, real_labels = [], []
    for batches in per_process:
        for batch in batches:
            assert batch["image"].shape == (GLOBAL_BATCH // 2, 8, 8, 1)
            real = batch["mask"] == 1.0
            real_images.append(batch["image"][real])
            real_labels.append(batch["label"][real])
    np.testing.assert_array_equal(np.concatenate(real_images), expected["image"])
    np.testing.assert_array_equal(np.concatenate(real_labels), expected["label"])


# --- image folder builder ---------------------------------------------------------------------


def _write_png(path, pixels):
    """Writes a uint8 [H, W, 3] array as a PNG, creating parent folders."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)


def _three_stripes(colour):
    """A 24-wide, 8-high image whose central 8x8 square is `colour` (left/right stripes differ)."""
    pixels = np.zeros((8, 24, 3), np.uint8)
    pixels[:, :8] = (255, 0, 0)
    pixels[:, 8:16] = colour
    pixels[:, 16:] = (0, 0, 255)
    return pixels


CLASS_COLOURS = {"cat": (200, 40, 10), "dog": (10, 120, 220)}


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """Two class sub-folders, four images each, nested one level deeper for 'dog'."""
    root = tmp_path_factory.mktemp("pets")
    for class_name, colour in CLASS_COLOURS.items():
        for index in range(4):
            nested = "puppies" if class_name == "dog" and index % 2 else ""
            _write_png(
                os.path.join(root, class_name, nested, f"{index}.png"), _three_stripes(colour)
            )
    return str(root)


def test_image_folder_labels_center_crop_and_splits(data_dir, class_folder):
    config = _config(data_dir, name=f"image_folder:{class_folder}", image_size=8, channels=3)
    info = pipeline.dataset_info(config)
    assert info["shape"] == (8, 8, 3) and info["num_classes"] == 2
    assert sum(info["num_examples"].values()) == 8
    assert info["num_examples"]["validation"] >= 1 and info["num_examples"]["test"] >= 1

    builder = pipeline.get_builder(config)
    assert builder.info.features["label"].names == ["cat", "dog"]
    for split in ("train", "validation", "test"):
        stored = tfds.as_numpy(builder.as_dataset(split, batch_size=-1, shuffle_files=False))
        loaded = pipeline.load_split_numpy(config, split)
        for file_name, label, image in zip(
            stored["file_name"], loaded["label"], loaded["image"], strict=True
        ):
            class_name = file_name.decode().split(os.sep)[0]
            assert label == ["cat", "dog"].index(class_name)
            # Center crop keeps only the middle stripe; no resize is needed at 8x8.
            expected = np.array(CLASS_COLOURS[class_name]) / 127.5 - 1.0
            np.testing.assert_allclose(image, np.broadcast_to(expected, (8, 8, 3)), atol=1e-6)


def test_image_folder_each_variant_has_its_own_directory(data_dir, class_folder, tmp_path):
    small = pipeline.get_builder(
        _config(data_dir, name=f"image_folder:{class_folder}", image_size=4, channels=1)
    )
    large = pipeline.get_builder(
        _config(data_dir, name=f"image_folder:{class_folder}", image_size=8, channels=3)
    )
    assert small.is_prepared() and large.is_prepared()
    assert small.data_path != large.data_path
    grey = pipeline.load_split_numpy(
        _config(data_dir, name=f"image_folder:{class_folder}", image_size=4, channels=1), "train"
    )["image"]
    assert grey.shape[1:] == (4, 4, 1)
    # PIL's L = (299 R + 587 G + 114 B) / 1000 on the constant central square.
    levels = {round((299 * r + 587 * g + 114 * b) / 1000) for r, g, b in CLASS_COLOURS.values()}
    assert {round(float(value)) for value in np.unique((grey + 1.0) * 127.5)} <= levels

    flat = tmp_path / "flat"
    for index in range(3):
        _write_png(str(flat / f"{index}.png"), np.full((5, 7, 3), 60 * index))
    flat_config = _config(data_dir, name=f"image_folder:{flat}", image_size=2, channels=3)
    assert pipeline.dataset_info(flat_config)["num_classes"] == 1
    assert pipeline.dataset_info(flat_config)["num_examples"] == {
        "train": 1,
        "validation": 1,
        "test": 1,
    }


def test_image_folder_rejects_corrupt_file_before_writing(data_dir, tmp_path):
    folder = tmp_path / "broken"
    _write_png(str(folder / "ok" / "good.png"), np.zeros((4, 4, 3)))
    (folder / "ok" / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="bad.png"):
        pipeline.get_builder(_config(data_dir, name=f"image_folder:{folder}"))
    unprepared = builders.image_folder.image_folder_builder(
        str(folder), image_size=64, channels=3, data_dir=data_dir
    )
    assert not unprepared.is_prepared() and not unprepared.data_path.exists()


def test_image_folder_missing_or_empty_names_the_path(data_dir, tmp_path):
    missing = tmp_path / "does_not_exist"
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        pipeline.get_builder(_config(data_dir, name=f"image_folder:{missing}"))
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="empty_folder"):
        pipeline.get_builder(_config(data_dir, name=f"image_folder:{empty}"))


# --- other TFDS datasets ----------------------------------------------------------------------


def test_unknown_dataset_name_is_a_clear_error(data_dir):
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_dataset_xyz'"):
        pipeline.get_builder(_config(data_dir, name="no_such_dataset_xyz"))


def test_unprepared_dataset_that_cannot_download_names_dataset_and_dir(data_dir, monkeypatch):
    def no_network(self, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
    with pytest.raises(ValueError, match="'mnist' is not prepared") as error:
        pipeline.get_builder(_config(data_dir, name="mnist"))
    assert data_dir in str(error.value) and "tfds build mnist" in str(error.value)


def test_pipeline_runs_on_tfds_mock_data(data_dir, sharding):
    """End-to-end tests elsewhere can use `tfds.testing.mock_data` for any TFDS dataset."""
    with tfds.testing.mock_data(num_examples=20):
        config = _config(data_dir, name="mnist")
        train = next(
            pipeline.make_train_iterator(
                config, global_batch_size=GLOBAL_BATCH, sharding=sharding, seed=0
            )
        )
        assert train["image"].shape == (GLOBAL_BATCH, 28, 28, 1)
        evaluation = list(
            pipeline.make_eval_iterator(
                config, "test", global_batch_size=GLOBAL_BATCH, sharding=sharding
            )
        )
        assert sum(float(batch["mask"].sum()) for batch in evaluation) == 20
