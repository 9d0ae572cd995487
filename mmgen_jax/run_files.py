"""The files that describe a run inside its workdir, written by process 0 at the start of training.

config.json        the resolved config (`ConfigDict.to_json_best_effort`);
dataset_info.json  the dataset description the model was built for (per-example shape, number
                   of classes, split sizes), so that sampling, compression and importing need
                   neither the dataset nor its builder.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections

CONFIG_FILE = "config.json"
DATASET_INFO_FILE = "dataset_info.json"


def write(workdir: str, config: ml_collections.ConfigDict, info: dict[str, Any]) -> None:
    """Write both files (process 0 only; other processes return at once)."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    with open(os.path.join(workdir, DATASET_INFO_FILE), "w") as f:
        json.dump({**info, "shape": list(info["shape"])}, f, indent=2, sort_keys=True)


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was trained with."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: {workdir!r} is not a trained mmgen_jax workdir"
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def read_dataset_info(workdir: str, data_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The run's dataset description: from `dataset_info.json`, else from the dataset itself
    (runs written before the file existed)."""
    path = os.path.join(workdir, DATASET_INFO_FILE)
    if os.path.exists(path):
        with open(path) as f:
            info = json.load(f)
        return {**info, "shape": tuple(info["shape"])}
    from mmgen_jax.data import pipeline

    return pipeline.dataset_info(data_config)
