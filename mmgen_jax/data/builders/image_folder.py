"""TFDS builder that turns a user's folder of PNG/JPEG files into a prepared dataset.

Training on your own images should need no conversion script: point `data.name` at
`image_folder:/path/to/images` and the pipeline builds a TFDS dataset from it on first use.

Layout: files are found recursively (hidden files and folders skipped). If every image sits
inside a top-level sub-folder, each sub-folder is a class and the label is the index of its name
in sorted order (the torchvision `ImageFolder` convention); if all images sit directly in the
folder, it is flat and every label is 0. A folder mixing both is rejected as ambiguous.

Each image is oriented by its EXIF tag, converted to grey (`L`) or `RGB`, center-cropped to a
square and resized with PIL (Lanczos when shrinking, bicubic when enlarging). Each distinct
(resolved folder, size, channels) is its own `BuilderConfig`, whose name carries a hash of the
path, so it builds into its own directory under `data_dir`. The contents of the folder are not
part of that identity: after adding or changing files, delete the built directory to rebuild.

Splits are decided per file by a stable hash of its relative path (about 90% train, 5%
validation, 5% test), so adding files never moves existing ones between splits, except that with
at least 3 images the validation and test splits are forced to be non-empty (see `assign_splits`).
"""

import dataclasses
import hashlib
import os
import re
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Cuts of the hash range [0, 1): train below the first, validation between, test above.
TRAIN_END, VALIDATION_END = 0.90, 0.95
MODE_FOR_CHANNELS = {1: "L", 3: "RGB"}


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
    """One (folder, image size, channels) variant of `UserImageFolder`.

    Build it with `ImageFolderConfig.for_folder`, which derives a unique, path-safe name.
    """

    folder: str = ""
    image_size: int = 64
    channels: int = 3

    @classmethod
    def for_folder(cls, folder: str, *, image_size: int, channels: int) -> "ImageFolderConfig":
        """Returns the config for `folder`; the name holds a short hash of the resolved path."""
        if channels not in MODE_FOR_CHANNELS:
            raise ValueError(f"channels must be 1 or 3 for an image folder, got {channels}.")
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}.")
        resolved = os.path.realpath(os.path.expanduser(folder))
        path_hash = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:10]
        stem = re.sub(r"[^a-z0-9]+", "_", os.path.basename(resolved).lower()).strip("_")[:32]
        return cls(
            name=f"{stem or 'root'}_{path_hash}_{image_size}px_{channels}ch",
            description=f"Images from {resolved} at {image_size}x{image_size}x{channels}.",
            folder=resolved,
            image_size=image_size,
            channels=channels,
        )


def scan_folder(folder: str) -> tuple[list[str], list[str]]:
    """Lists a folder's images and classes: `(sorted relative paths, sorted class names)`.

    Class names are the top-level sub-folders when no image sits directly in `folder`; otherwise
    the folder is flat and the class list is empty. Raises if the folder is missing or holds no
    image, and if images sit both at the top level and in sub-folders (ambiguous labels).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Image folder {folder!r} does not exist or is not a directory.")
    relative_paths = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if not name.startswith(".")]  # e.g. .ipynb_checkpoints
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                relative_paths.append(os.path.relpath(os.path.join(root, name), folder))
    if not relative_paths:
        raise ValueError(f"Image folder {folder!r} contains no {'/'.join(IMAGE_EXTENSIONS)} file.")
    relative_paths.sort()
    top_level = [path for path in relative_paths if os.sep not in path]
    if not top_level:
        return relative_paths, sorted({path.split(os.sep, 1)[0] for path in relative_paths})
    if len(top_level) != len(relative_paths):
        raise ValueError(
            f"Image folder {folder!r} mixes images at its top level (e.g. {top_level[0]!r}) with "
            "images in sub-folders; put every image in a class sub-folder, or none."
        )
    return relative_paths, []


def _hash_fraction(relative_path: str) -> float:
    """Maps a relative path to a stable number in [0, 1) (same on every machine and run)."""
    digest = hashlib.sha256(relative_path.replace(os.sep, "/").encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(relative_paths: list[str]) -> dict[str, list[str]]:
    """Splits paths by their hash fraction into train / validation / test (each sorted).

    Paths sorted by hash fraction are cut at `TRAIN_END` and `VALIDATION_END`. With
    3 or more images, an empty validation or test split takes the highest-hash images instead,
    so evaluation always has data.
    """
    by_hash = sorted(relative_paths, key=_hash_fraction)
    fractions = [_hash_fraction(path) for path in by_hash]
    num_validation = sum(TRAIN_END <= fraction < VALIDATION_END for fraction in fractions)
    num_test = sum(fraction >= VALIDATION_END for fraction in fractions)
    if len(by_hash) >= 3:
        num_validation, num_test = max(num_validation, 1), max(num_test, 1)
    num_train = len(by_hash) - num_validation - num_test
    return {
        "train": sorted(by_hash[:num_train]),
        "validation": sorted(by_hash[num_train : num_train + num_validation]),
        "test": sorted(by_hash[num_train + num_validation :]),
    }


def load_image(path: str, *, image_size: int, channels: int) -> np.ndarray:
    """Reads one image file as `[image_size, image_size, channels]` uint8 (crop, then resize)."""
    with Image.open(path) as raw:
        image = ImageOps.exif_transpose(raw).convert(MODE_FOR_CHANNELS[channels])
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != image_size:
        # Lanczos anti-aliases when shrinking; bicubic is smoother when enlarging.
        shrinking = side > image_size
        resample = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC
        image = image.resize((image_size, image_size), resample=resample)
    return np.asarray(image, dtype=np.uint8).reshape(image_size, image_size, channels)


class UserImageFolder(tfds.core.GeneratorBasedBuilder):
    """A folder of PNG/JPEG images as a TFDS dataset (`user_image_folder/<config>`).

    Construct it with `image_folder_builder`; the config carries the folder and target shape.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIG_CLS = ImageFolderConfig

    def _info(self) -> tfds.core.DatasetInfo:
        """Declares the image / label / file-name features; lists classes from the folder."""
        config = self.builder_config
        _, class_names = scan_folder(config.folder)
        label = (
            tfds.features.ClassLabel(names=class_names)
            if class_names
            else tfds.features.ClassLabel(num_classes=1)
        )
        image_shape = (config.image_size, config.image_size, config.channels)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=image_shape),
                    "label": label,
                    "file_name": tfds.features.Text(),  # path relative to the folder
                }
            ),
            supervised_keys=("image", "label"),
            # Examples are written sorted by path, so a split reads back in a predictable order.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        """Validates every image before anything is written, then returns the three splits."""
        del dl_manager  # Everything is local.
        config = self.builder_config
        relative_paths, class_names = scan_folder(config.folder)
        # Fully decode each file now: a corrupt image found halfway through writing would leave
        # a confusing partial build behind, and `Image.verify` misses truncated pixel data.
        for relative_path in relative_paths:
            path = os.path.join(config.folder, relative_path)
            try:
                with Image.open(path) as image:
                    image.load()
            except Exception as error:  # PIL raises many types (OSError, SyntaxError, ...).
                raise ValueError(f"Cannot read image file {path!r}: {error}") from error
        return {
            split: self._generate_examples(paths, class_names)
            for split, paths in assign_splits(relative_paths).items()
        }

    def _generate_examples(
        self, relative_paths: list[str], class_names: list[str]
    ) -> Iterator[tuple[str, dict]]:
        """Yields `(relative path, example)` for the given files, in path order."""
        config = self.builder_config
        label_for_class = {name: index for index, name in enumerate(class_names)}
        for relative_path in relative_paths:
            label = label_for_class[relative_path.split(os.sep, 1)[0]] if class_names else 0
            image = load_image(
                os.path.join(config.folder, relative_path),
                image_size=config.image_size,
                channels=config.channels,
            )
            yield relative_path, {"image": image, "label": label, "file_name": relative_path}


def image_folder_builder(
    folder: str, *, image_size: int, channels: int, data_dir: str | None
) -> UserImageFolder:
    """Returns the (possibly unprepared) builder for `folder` at the given size and channels."""
    config = ImageFolderConfig.for_folder(folder, image_size=image_size, channels=channels)
    return UserImageFolder(config=config, data_dir=data_dir)
