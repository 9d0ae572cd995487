"""Data layer: TFDS datasets (including the project's offline builders) to sharded batches.

See `pipeline` for the config fields and batch layout, and `builders` for the datasets that
build offline (`digits`, `image_folder:<path>`).
"""

from mmgen_jax.data.pipeline import (
    dataset_info,
    get_builder,
    load_split_numpy,
    make_eval_iterator,
    make_train_iterator,
)

__all__ = [
    "dataset_info",
    "get_builder",
    "load_split_numpy",
    "make_eval_iterator",
    "make_train_iterator",
]
