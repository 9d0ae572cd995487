"""TFDS builder for the 8x8 handwritten digits that ship inside scikit-learn.

The UCI optical-recognition digits (1,797 images, 8x8, 16 grey levels) are embedded in the
scikit-learn wheel, so this dataset builds offline on any machine. It is the project's smoke-test
dataset: small enough that a pixel-space diffusion model trains in minutes on a laptop CPU.

Splits follow file order so that they are identical everywhere: the first 1,300 images are
`train`, the next 200 `validation`, the last 297 `test` (written by different people than the
training images, which makes `test` a fair held-out set). Examples are written without TFDS's
key-hash shuffling (`disable_shuffling=True`), so reading a split back yields sklearn's order.
"""

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

# Split name -> [start, stop) range of indices into sklearn's file order.
SPLIT_RANGES = {
    "train": (0, 1300),
    "validation": (1300, 1500),
    "test": (1500, 1797),
}
# sklearn stores pixel intensities as integers 0..16.
MAX_PIXEL_VALUE = 16


def digits_as_uint8() -> tuple[np.ndarray, np.ndarray]:
    """Returns sklearn's digits as `(images [1797, 8, 8, 1] uint8, labels [1797] int64)`.

    Intensities 0..16 are rescaled to 0..255 with `round(v * 255 / 16)`.
    """
    digits = load_digits()
    images = np.round(digits.images * 255.0 / MAX_PIXEL_VALUE).astype(np.uint8)  # [N, 8, 8]
    return images[..., np.newaxis], digits.target.astype(np.int64)


class Digits(tfds.core.GeneratorBasedBuilder):
    """The scikit-learn 8x8 digits as a TFDS dataset named `digits`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: sklearn order, 1300/200/297 split."}

    def _info(self) -> tfds.core.DatasetInfo:
        """Declares an 8x8 grey image and a 10-way label, stored in generation order."""
        return self.dataset_info_from_configs(
            description="8x8 handwritten digits (UCI optical recognition) from scikit-learn.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep sklearn's order so the file-order splits and `load_split_numpy` are stable.
            disable_shuffling=True,
            homepage="https://archive.ics.uci.edu/dataset/80",
            citation=(
                "@misc{alpaydin1998digits, author={Alpaydin, E. and Kaynak, C.}, "
                "title={Optical Recognition of Handwritten Digits}, year={1998}, "
                "howpublished={UCI Machine Learning Repository}}"
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        """Slices the in-memory arrays into the three file-order splits; nothing is downloaded."""
        del dl_manager  # The data ships with scikit-learn.
        images, labels = digits_as_uint8()
        return {
            split: self._generate_examples(images[start:stop], labels[start:stop], start)
            for split, (start, stop) in SPLIT_RANGES.items()
        }

    def _generate_examples(
        self, images: np.ndarray, labels: np.ndarray, first_index: int
    ) -> Iterator[tuple[int, dict]]:
        """Yields `(index in sklearn order, example)` for one split."""
        for offset, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield first_index + offset, {"image": image, "label": int(label)}
