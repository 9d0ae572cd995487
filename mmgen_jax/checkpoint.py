"""Orbax checkpoints of the train state: the only module that talks to Orbax.

Each checkpoint step holds two items: `state` (the whole train state, written collectively by
every process, each writing its own shards) and `meta` (JSON: the step, the parameter shapes of
the model that wrote it, and anything the trainer adds, e.g. the data position). Orbax writes a
step into a temporary directory and renames it only when complete, so an interrupted save never
becomes the latest checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util
from jax.experimental import multihost_utils

logger = logging.getLogger(__name__)


def param_shapes(params: Any) -> dict[str, list[int]]:
    """{'encoder/stem/kernel': [3, 3, 1, 64], ...}: a fingerprint of the model architecture."""
    flat = traverse_util.flatten_dict(params, sep="/")
    return {path: list(leaf.shape) for path, leaf in sorted(flat.items())}


class ModelMismatchError(ValueError):
    """A checkpoint holds a different model than the one being restored into."""


def check_same_model(saved: Mapping[str, list[int]], current: Mapping[str, list[int]], where: str):
    """Raise a ValueError naming the first difference between two parameter fingerprints."""
    if dict(saved) == dict(current):
        return
    only_saved = sorted(set(saved) - set(current))
    only_current = sorted(set(current) - set(saved))
    reshaped = [k for k in sorted(set(saved) & set(current)) if list(saved[k]) != list(current[k])]
    details = []
    if reshaped:
        key = reshaped[0]
        details.append(
            f"parameter {key!r} has shape {tuple(saved[key])} in the checkpoint but "
            f"{tuple(current[key])} in this config ({len(reshaped)} differ)"
        )
    if only_saved:
        details.append(
            f"{len(only_saved)} parameters only in the checkpoint, e.g. {only_saved[0]!r}"
        )
    if only_current:
        details.append(
            f"{len(only_current)} parameters only in this config, e.g. {only_current[0]!r}"
        )
    raise ModelMismatchError(
        f"the checkpoint in {where} was written by a different model: {'; '.join(details)}. "
        "Use a new --workdir or the config that wrote it."
    )


class Checkpointer:
    """Save and restore train states under `<workdir>/checkpoints`.

    Args:
      directory: where the step directories live (local path or gs://).
      max_to_keep: how many most recent checkpoints to keep.
      async_save: write in a background thread so training continues during the write.
    """

    def __init__(self, directory: str, *, max_to_keep: int = 2, async_save: bool = True):
        self.directory = os.fspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            save_interval_steps=1,  # the trainer decides when to save
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> int | None:
        """The newest step whose write completed, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: Mapping[str, Any] | None = None) -> None:
        """Start writing `state` at `step` (asynchronous; see `wait`)."""
        meta = dict(meta or {})
        meta.setdefault("step", int(step))
        meta.setdefault("param_shapes", param_shapes(state.params))
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )

    def restore_meta(self, step: int) -> dict[str, Any]:
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored.meta)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restore `step` into the layout described by `abstract_state`.

        `abstract_state` is a tree of `jax.ShapeDtypeStruct` with shardings, so a checkpoint
        written on one mesh restores onto another. The parameter shapes are compared first:
        a checkpoint from a different model is an error naming the first mismatch.
        """
        meta = self.restore_meta(step)
        check_same_model(
            meta.get("param_shapes", {}),
            param_shapes(abstract_state.params),
            f"{self.directory} (step {step})",
        )
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        )
        return restored.state, meta

    def restore_newest(self, abstract_state: Any) -> tuple[Any, dict[str, Any], int] | None:
        """(state, meta, step) of the newest checkpoint that can be read, or None if there is
        no checkpoint. A newer checkpoint whose files are unreadable (a disk failure, files
        removed by hand) is skipped with a warning naming it; Orbax never lists a write that
        did not finish. A checkpoint of another model is an error, and so is a directory
        whose checkpoints are all unreadable: nothing is silently re-initialised over a run.
        """
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            return None
        for step in steps:
            try:
                state, meta = self.restore(step, abstract_state)
            except ModelMismatchError:
                raise
            except Exception as error:  # noqa: BLE001 - any read failure means "unreadable"
                logger.warning(
                    "skipping unreadable checkpoint %s: %s: %s",
                    os.path.join(self.directory, str(step)),
                    type(error).__name__,
                    str(error).splitlines()[0][:300] if str(error) else "",
                )
                self._set_aside(step)
                continue
            return state, meta, step
        raise RuntimeError(
            f"none of the checkpoints {steps} under {self.directory} can be read; move the "
            "directory away to start a new run"
        )

    def _set_aside(self, step: int) -> None:
        """Rename an unreadable step directory to `unreadable-<step>-<time>` (kept for
        inspection, ignored by Orbax) so that the step can be written again."""
        if jax.process_index() == 0:
            path = epath.Path(self.directory)
            (path / str(step)).rename(path / f"unreadable-{step}-{int(time.time())}")
        multihost_utils.sync_global_devices(f"mmgen_jax set aside checkpoint {step}")
        self._manager.reload()

    def reached_preemption(self, step: int) -> bool:
        """True on every process at the same step once JAX's multi-host preemption sync saw a
        preemption notice (always False in a single process without `jax.distributed`)."""
        return bool(self._manager.reached_preemption(step))

    def wait(self) -> None:
        """Block until every pending save is fully written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs with the given shardings: the restore target for `Checkpointer`."""
    return jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        tree,
        shardings,
    )
