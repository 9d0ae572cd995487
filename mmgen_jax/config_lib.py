"""Helpers for configs written as Python: argument strings and validation.

A config file exposes `get_config(arg)`; `arg` is the text after the colon in
`--config=configs/vqvae.py:dataset=digits,quantizer=fsq`. `parse_arg` turns it into a typed,
validated `ConfigDict` of variant choices so a typo fails immediately with the bad key named.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

from mmgen_jax import sharding


def _convert(text: str, default: Any) -> Any:
    """Interpret `text` with the type of `default` (bools accept true/false/1/0)."""
    if isinstance(default, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, str) or default is None:
        return text
    return type(default)(ast.literal_eval(text))


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parse `key=value,key=value` into a ConfigDict typed after `defaults`.

    Unknown keys and unconvertible values raise ValueError naming them and the allowed keys.
    A bare word without '=' is not accepted: every variant choice is named.
    """
    values = dict(defaults)
    for item in filter(None, (part.strip() for part in (arg or "").split(","))):
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"config argument {item!r} is not of the form key=value")
        if key not in defaults:
            raise ValueError(
                f"unknown config argument {key!r}; allowed: {', '.join(sorted(defaults))}"
            )
        try:
            values[key] = _convert(text, defaults[key])
        except ValueError as err:
            raise ValueError(f"config argument {key}={text!r}: {err}") from None
    return ml_collections.ConfigDict(values)


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of the config file at `path` (for configs that combine others)."""
    spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"config file {path} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def load_sibling(anchor: str, name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of `<name>.py` beside the file `anchor` (a config's own `__file__`).

    Staged configs build each stage from the single-stage config next to them, wherever the
    configs folder lives.
    """
    return load_config_file(
        os.path.join(os.path.dirname(os.path.abspath(anchor)), f"{name}.py"), arg
    )


def require_choice(name: str, value: Any, choices: Mapping[str, Any] | tuple) -> None:
    """Raise a clear ValueError if `value` is not one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")


def base_config() -> ml_collections.ConfigDict:
    """Sections shared by every experiment: data, optimizer, training durations, mesh.

    Experiment configs start from this, fill in `trainer` and their model sections, and lock the
    result so a misspelt `--config.<key>` override fails instead of adding a new key.
    """
    config = ml_collections.ConfigDict()
    config.trainer = ""
    config.name = ""  # shown by the progress display; the trainer name when empty
    config.seed = 0
    config.data = dict(
        name="digits",
        data_dir=config_dict.placeholder(str),  # unset: $TFDS_DATA_DIR or ~/tensorflow_datasets
        image_size=config_dict.placeholder(int),  # square resize; unset keeps the native size
        channels=config_dict.placeholder(int),  # convert to 1 or 3 channels; unset keeps them
        train_split="train",
        eval_split="validation",
        test_split="test",
        shuffle_buffer=10_000,
        # 'split': each process reads its own slice; 'batch': every process reads the whole
        # split and keeps its rows of each global batch (same batches for any process count).
        host_sharding="split",
    )
    config.optimizer = dict(
        learning_rate=1e-3,
        warmup_steps=100,
        end_learning_rate_factor=0.01,  # cosine decays to this fraction of the peak
        b1=0.9,
        b2=0.99,
        weight_decay=1e-4,
        grad_clip_norm=1.0,
    )
    config.training = dict(
        global_batch_size=128,
        total_steps=1000,
        log_every=50,
        eval_every=500,
        checkpoint_every=500,
        keep_checkpoints=2,
        ema_decay=0.999,  # EMA of the parameters, used for evaluation
        num_visualize=32,  # examples in the image grids written at each evaluation
        augment=(),  # names from mmgen_jax.augment.AUGMENTATIONS, drawn inside the step
        max_steps_in_flight=2,  # dispatched but unfinished steps the host may queue
        # Matmul/conv dtype ('bfloat16' on TPU/GPU); params, optimizer and losses stay fp32.
        compute_dtype="float32",
        # Average gradients over this many micro-batches of the global batch (less memory).
        grad_accum_steps=1,
    )
    # Device mesh: -1 fills the axis with the remaining devices. `rules` map the models' logical
    # axis names to mesh axes (mmgen_jax/sharding.py); unannotated leaves of at least
    # `fallback_min_size` elements are split over 'fsdp' on their largest divisible axis.
    config.mesh = dict(
        data=-1,
        fsdp=1,
        rules=sharding.DEFAULT_RULES,
        fallback_min_size=sharding.DEFAULT_FALLBACK_MIN_SIZE,
    )
    return config
