"""Entry point: `python -m mmgen_jax.main --config=configs/<file>.py[:args] --workdir=DIR`.

Overrides: `--config.training.total_steps=100`. Re-running the same command on the same workdir
resumes from the newest checkpoint. On several hosts pass `--distributed` (or set
MMGEN_DISTRIBUTED=1) so every process joins the same JAX runtime before anything else runs.
"""

from __future__ import annotations

import logging
import os

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from mmgen_jax import sharding, trainers, xla_flags
from mmgen_jax.trainers import loop, stages

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and images.")


def _on_cloud_tpu_vm() -> bool:
    """Whether this is a Cloud TPU VM (JAX's own test; False if JAX no longer offers it)."""
    try:
        from jax._src.cloud_tpu_init import running_in_cloud_tpu_vm
    except ImportError:
        return False
    return bool(running_in_cloud_tpu_vm)


_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    os.environ.get("MMGEN_DISTRIBUTED", "") == "1",
    "Call jax.distributed.initialize() (multi-host TPU/GPU runs; always done on Cloud TPU VMs, "
    "where a single host joins as a one-process job).",
)
flags.mark_flags_as_required(["config", "workdir"])


def _configure_logging() -> None:
    """INFO for this package; WARNING for libraries (Orbax, TFDS) unless --verbosity is given."""
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("mmgen_jax").setLevel(logging.INFO)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    xla_flags.configure_for_cpu()
    explicit = flags.FLAGS["distributed"].present or "MMGEN_DISTRIBUTED" in os.environ
    if _DISTRIBUTED.value if explicit else _on_cloud_tpu_vm():
        sharding.initialize_distributed()
    _configure_logging()
    logging.getLogger("mmgen_jax").info(
        "process %d/%d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    config = _CONFIG.value
    try:
        if config.trainer == "stages":
            stages.run_stages(config, _WORKDIR.value)
        else:
            factory = trainers.get_objective_factory(config.trainer)
            loop.train_and_evaluate(config, _WORKDIR.value, factory)
    except loop.Preempted as preempted:
        # The state is saved; exit 0 so the scheduler restarts the job, which then resumes.
        logging.getLogger("mmgen_jax").warning("%s", preempted)
        return


if __name__ == "__main__":
    app.run(main)
