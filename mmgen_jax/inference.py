"""Load a trained run from its workdir: the resolved config and the restored variables.

Tools (compression, sampling, a generator's frozen tokenizer) use this instead of re-running
the trainer: it reads `<workdir>/config.json`, rebuilds the objective and restores the newest
checkpoint onto the current devices.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from mmgen_jax import checkpoint as checkpoint_lib
from mmgen_jax import run_files, trainers
from mmgen_jax import sharding as sharding_lib
from mmgen_jax.trainers import loop
from mmgen_jax.trainers.state import make_optimizer


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was trained with (`<workdir>/config.json`)."""
    return run_files.read_config(workdir)


@dataclasses.dataclass
class TrainedRun:
    """A restored run: its config, objective (with the model), variables and step.

    `variables` is {'params': ..., **model_state}, ready for `objective.model.apply`; `info` is
    the dataset info the model was built for.
    """

    config: ml_collections.ConfigDict
    objective: Any
    variables: dict[str, Any]
    info: dict[str, Any]
    step: int


def load_trained(workdir: str, *, use_ema: bool | None = None) -> TrainedRun:
    """Restore the newest checkpoint of `workdir` onto the local devices.

    The parameters are the EMA parameters when the run kept them, or as `use_ema` says.
    """
    config = load_config(workdir)
    checkpointer = checkpoint_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"), async_save=False
    )
    step = checkpointer.latest_step()
    if step is None:
        raise FileNotFoundError(f"no complete checkpoint under {checkpointer.directory}")
    info = run_files.read_dataset_info(workdir, config.data)
    objective = trainers.get_objective_factory(config.trainer)(config, info)
    tx, _ = make_optimizer(config.optimizer, config.training.total_steps)
    mesh = sharding_lib.make_mesh(data=-1, fsdp=1)
    _, abstract, shardings = loop.abstract_state(config, objective, tx, info, mesh)
    state, _ = checkpointer.restore(step, checkpoint_lib.abstract_like(abstract, shardings))
    checkpointer.close()
    if use_ema is None:
        use_ema = config.training.ema_decay > 0
    variables = {"params": state.eval_params(use_ema), **state.model_state}
    return TrainedRun(config, objective, variables, info, int(state.step))
