"""The training loop shared by every model family.

init -> shard -> restore -> (train step, log, evaluate, checkpoint)* -> final test evaluation.

The loop is model-agnostic: an `Objective` (see `objective.py`) supplies the model-specific
parts. Everything runs on global `jax.Array`s under one `('data', 'fsdp')` mesh; the step is
`jax.jit` with explicit shardings and a donated state. Randomness for step s is
`fold_in(state.rng, s)`, drawn inside jit at the global batch shape, so a run gives the same
numbers on 1 device, 8 devices or several hosts.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mmgen_jax import benchmarking, run_files
from mmgen_jax import checkpoint as checkpoint_lib
from mmgen_jax import sharding as sharding_lib
from mmgen_jax.data import arrays, pipeline
from mmgen_jax.metrics import MetricWriter, Progress
from mmgen_jax.trainers.objective import Batch, Objective
from mmgen_jax.trainers.state import TrainState, create_train_state, make_optimizer

logger = logging.getLogger(__name__)

ObjectiveFactory = Callable[[ml_collections.ConfigDict, dict[str, Any]], Objective]


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or Inf."""


class Preempted(Exception):
    """Training stopped on a preemption notice after checkpointing `step` (exit status 0)."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class _PreemptionWatch:
    """Notices preemption: SIGTERM in a single-process run (the handler only sets a flag; the
    loop checkpoints at the next step boundary), JAX's preemption sync on several hosts (Orbax
    `reached_preemption`, true on every process at the same step; JAX's own SIGTERM handling
    is left in place there)."""

    def __init__(self):
        self.flag = False
        self._previous = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        logger.warning("SIGTERM: checkpointing at the next step boundary, then exiting")
        self.flag = True

    def reached(self, step: int, checkpointer: checkpoint_lib.Checkpointer) -> bool:
        return self.flag or checkpointer.reached_preemption(step)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def _compile_and_report(step_fn, state: TrainState, batch: Batch, workdir: str):
    """Compile the train step ahead of time and log its memory analysis before training (also
    written to `<workdir>/memory.json` by process 0); returns the compiled step."""
    compiled = step_fn.lower(state, batch).compile()
    report = {f"{k}_mb": v / 2**20 for k, v in benchmarking.memory_of(compiled).items()}
    report["params_per_device_mb"] = sharding_lib.per_device_bytes(state.params) / 2**20
    report["params_total_mb"] = sum(p.nbytes for p in jax.tree.leaves(state.params)) / 2**20
    report["state_per_device_mb"] = sharding_lib.per_device_bytes(state) / 2**20
    logger.info(
        "compiled train step, per device: %s", ", ".join(f"{k} {v:.2f}" for k, v in report.items())
    )
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "memory.json"), "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
    return compiled


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
    """EMA decay with warm-up, min(decay, (1 + step) / (10 + step)).

    As in TensorFlow's ExponentialMovingAverage(num_updates=step): without it the average of a
    short run is dominated by the random initial weights (0.9999^1000 = 0.9).
    """
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    objective: Objective,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    ema_decay: float,
    grad_accum_steps: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on one global batch (traced inside jit).

    With `grad_accum_steps = k > 1` the batch is cut into k micro-batches (micro-batch i holds
    rows i, i + k, ...: every device keeps its share of each) whose gradients and metrics are
    averaged in a `lax.scan`, so activations are held for B / k examples at a time. Model state
    (e.g. an EMA codebook) is updated micro-batch after micro-batch; micro-batch i draws its
    randomness from `fold_in(step key, i)`.
    """
    rng = jax.random.fold_in(state.rng, state.step)
    grad_fn = jax.value_and_grad(objective.loss, has_aux=True)
    if grad_accum_steps == 1:
        (loss, (model_state, metrics)), grads = grad_fn(state.params, state.model_state, batch, rng)
    else:
        micro_batches = jax.tree.map(
            lambda x: x.reshape(
                x.shape[0] // grad_accum_steps, grad_accum_steps, *x.shape[1:]
            ).swapaxes(0, 1),
            batch,
        )  # every leaf [k, B / k, ...]

        def accumulate(carry, inputs):
            grads_sum, model_state = carry
            index, micro_batch = inputs
            (loss, (model_state, metrics)), grads = grad_fn(
                state.params, model_state, micro_batch, jax.random.fold_in(rng, index)
            )
            grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
            return (grads_sum, model_state), dict(metrics, loss=loss)

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (grads, model_state), per_micro = jax.lax.scan(
            accumulate,
            (zeros, state.model_state),
            (jnp.arange(grad_accum_steps), micro_batches),
        )
        grads = jax.tree.map(lambda g: g / grad_accum_steps, grads)
        per_micro = jax.tree.map(lambda m: jnp.mean(m, axis=0), per_micro)
        loss = per_micro.pop("loss")
        metrics = per_micro
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params = objective.post_update(params, model_state)
    ema_params = optax.incremental_update(
        params, state.ema_params, step_size=1.0 - ema_decay_at(state.step, ema_decay)
    )
    metrics = dict(metrics, loss=loss)
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["learning_rate"] = schedule(state.step)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        ema_params=ema_params,
        model_state=model_state,
    )
    return new_state, metrics


def _example_batch(info: dict[str, Any]) -> Batch:
    """A one-example batch with the dataset's shapes, for initialisation."""
    return {
        "image": jnp.zeros((1, *info["shape"]), jnp.float32),
        "label": jnp.zeros((1,), jnp.int32),
    }


def init_fn(objective: Objective, tx, info: dict[str, Any], boxed: bool = False):
    """The state initialiser. `boxed=True` keeps the parameters' logical-axis boxes (on the
    parameters, their EMA and the optimizer moments), which `abstract_state` reads the sharding
    from; the state that is trained is unboxed."""

    def init(rng: jax.Array) -> TrainState:
        init_rng, state_rng = jax.random.split(rng)
        variables = dict(objective.init_variables(init_rng, _example_batch(info)))
        if not boxed:
            variables = dict(sharding_lib.unbox(variables))
        params = variables.pop("params")
        return create_train_state(params, variables, tx, state_rng)

    return init


def abstract_state(
    config: ml_collections.ConfigDict,
    objective: Objective,
    tx: optax.GradientTransformation,
    info: dict[str, Any],
    mesh: jax.sharding.Mesh,
) -> tuple[Callable, TrainState, Any]:
    """(init function, abstract state, state shardings); validates model against data shapes."""
    init = init_fn(objective, tx, info)
    abstract = jax.eval_shape(init, jax.random.PRNGKey(config.seed))
    boxed = jax.eval_shape(init_fn(objective, tx, info, boxed=True), jax.random.PRNGKey(0))
    shardings = sharding_lib.state_shardings(
        boxed,
        mesh,
        config.mesh.get("rules", sharding_lib.DEFAULT_RULES),
        config.mesh.get("fallback_min_size", sharding_lib.DEFAULT_FALLBACK_MIN_SIZE),
    )
    return init, abstract, shardings


def initialize_or_restore(
    config: ml_collections.ConfigDict,
    init: Callable,
    abstract: TrainState,
    shardings: Any,
    checkpointer: checkpoint_lib.Checkpointer,
) -> TrainState:
    """The newest readable checkpoint if there is one, else a freshly initialised state.

    The data order needs no position of its own in the checkpoint: the input pipeline is a pure
    function of the step (`make_train_iterator(start_step=...)`), so a resumed run reads exactly
    the batches an uninterrupted one would. Resuming with another global batch size works but
    reads another order; it is logged as a warning.
    """
    restored = checkpointer.restore_newest(checkpoint_lib.abstract_like(abstract, shardings))
    if restored is None:
        return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(config.seed))
    state, meta, step = restored
    saved_batch = meta.get("global_batch_size", config.training.global_batch_size)
    if saved_batch != config.training.global_batch_size:
        logger.warning(
            "%s (step %d) was trained with global_batch_size=%d, now %d: the run continues "
            "with a different data order than an uninterrupted run would have",
            checkpointer.directory,
            step,
            saved_batch,
            config.training.global_batch_size,
        )
    logger.info("Resuming from %s step %d", checkpointer.directory, step)
    return state


def evaluate(
    objective: Objective,
    params: Any,
    model_state: Any,
    batches: Iterator[Batch],
    eval_step: Callable,
) -> tuple[dict[str, float], Batch]:
    """Run `eval_step` over a whole split; (metrics from `objective.finalize_eval`, first batch)."""
    sums, first = None, None
    for batch in batches:
        out = eval_step(params, model_state, batch)
        sums, first = (out, batch) if sums is None else (jax.tree.map(jnp.add, sums, out), first)
    if sums is None:
        raise ValueError("the evaluation split is empty")
    metrics = objective.finalize_eval(jax.tree.map(np.asarray, jax.device_get(sums)))
    return metrics, first


class _Run:
    """The mutable bookkeeping of one training run: writer, progress, pending metrics."""

    def __init__(self, config, workdir: str, start_step: int):
        self.config = config
        self.workdir = workdir
        self.writer = MetricWriter(workdir)
        self.progress = Progress(
            config.training.total_steps, start_step, desc=config.get("name") or config.trainer
        )
        self.pending: list[tuple[int, dict[str, jax.Array]]] = []

    def limit_steps_in_flight(self) -> None:
        """Wait for the step `max_steps_in_flight` back before dispatching more.

        Without a bound the host can queue hundreds of steps; on XLA:CPU with several devices
        that starves the collectives of threads (an all-reduce times out with only some of the
        devices arrived). A couple of steps in flight still overlap input and compute.
        """
        depth = self.config.training.get("max_steps_in_flight", 2)
        if len(self.pending) > depth:
            jax.block_until_ready(self.pending[-depth - 1][1]["loss"])

    def check_finite(self) -> None:
        """Raise NonFiniteLossError naming the first pending step whose loss is NaN or Inf."""
        losses = jax.device_get([(step, metrics["loss"]) for step, metrics in self.pending])
        for step, loss in losses:
            if not np.isfinite(loss):
                raise NonFiniteLossError(
                    f"training loss is {float(loss)} at step {step}; stopping. "
                    "Lower optimizer.learning_rate or check the data."
                )

    def flush_train_metrics(self) -> None:
        """Write the mean metrics of the steps since the last flush; stop on a non-finite loss."""
        if not self.pending:
            return
        self.check_finite()
        fetched = jax.device_get(self.pending)
        self.pending = []
        last_step = fetched[-1][0]
        means = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[-1][1]}
        if self.progress.steps_per_second is not None:
            means["steps_per_second"] = self.progress.steps_per_second
        self.writer.write_scalars(last_step, "train", means)
        self.progress.update(last_step, loss=means["loss"])


def _evaluate_split(run: _Run, objective, state, split: str, eval_step, mesh) -> None:
    """Evaluate on `split` ('eval' = validation, 'test'), log metrics and write images."""
    config = run.config
    params = state.eval_params(config.training.ema_decay > 0)
    batches = pipeline.make_eval_iterator(
        config.data,
        config.data.get(f"{split}_split"),
        global_batch_size=config.training.global_batch_size,
        sharding=sharding_lib.batch_sharding(mesh),
    )
    step = int(state.step)
    metrics, first = evaluate(objective, params, state.model_state, batches, eval_step)
    run.writer.write_scalars(step, split, metrics)
    logger.info("step %d %s: %s", step, split, json.dumps(metrics, sort_keys=True))
    for name, item in objective.visualize(params, state.model_state, first).items():
        run.writer.write_media(step, f"{split}/{name}", item)
    run.writer.flush()


def jit_train_step(config, objective, tx, schedule, shardings, mesh: jax.sharding.Mesh):
    """`train_step` under `jax.jit` with the state's and the batch's shardings, the config's EMA
    decay and gradient accumulation, and the state donated."""
    return jax.jit(
        functools.partial(
            train_step,
            objective=objective,
            tx=tx,
            schedule=schedule,
            ema_decay=config.training.ema_decay,
            grad_accum_steps=int(config.training.get("grad_accum_steps", 1)),
        ),
        in_shardings=(shardings, sharding_lib.batch_sharding(mesh)),
        out_shardings=(shardings, sharding_lib.replicated(mesh)),
        donate_argnums=0,
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    make_objective: ObjectiveFactory,
    *,
    devices: list[jax.Device] | None = None,
) -> TrainState:
    """Train (or resume) the run in `workdir` to `config.training.total_steps`; return the state.

    Every check that can fail on bad input (mesh, batch size, dataset, model vs data shape,
    checkpoint from another model) runs before the first step. `devices` restricts the mesh to
    some of the devices (default: all of them).

    Raises `Preempted` after SIGTERM (or a JAX preemption notice on several hosts) once the
    state of the step in progress is checkpointed.
    """
    training = config.training
    mesh = sharding_lib.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
    accum = int(training.get("grad_accum_steps", 1))
    sharding_lib.check_batch_size(training.global_batch_size, mesh)
    if accum < 1 or training.global_batch_size % (accum * sharding_lib.batch_shards(mesh)):
        raise ValueError(
            f"training.grad_accum_steps={accum} must be >= 1 and global_batch_size="
            f"{training.global_batch_size} divisible by grad_accum_steps x the "
            f"{sharding_lib.batch_shards(mesh)} batch shards of the mesh"
        )
    info = pipeline.dataset_info(config.data)
    objective = make_objective(config, info)
    tx, schedule = make_optimizer(config.optimizer, training.total_steps)
    rules = sharding_lib.normalize_rules(config.mesh.get("rules", sharding_lib.DEFAULT_RULES))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        init, abstract, shardings = abstract_state(config, objective, tx, info, mesh)
        checkpointer = checkpoint_lib.Checkpointer(
            os.path.join(workdir, "checkpoints"), max_to_keep=training.keep_checkpoints
        )
        try:
            state = initialize_or_restore(config, init, abstract, shardings, checkpointer)
            run_files.write(workdir, config, info)
            step_fn = jit_train_step(config, objective, tx, schedule, shardings, mesh)
            state = _train_loop(config, workdir, objective, step_fn, state, mesh, checkpointer)
        finally:
            checkpointer.close()  # never leave a save half-written on the way out
    return state


def _train_loop(config, workdir, objective, step_fn, state, mesh, checkpointer) -> TrainState:
    """Steps from the state's step to total_steps, with logging, evaluation and checkpoints."""
    training = config.training
    eval_step = jax.jit(objective.eval_step)
    start = int(state.step)
    run = _Run(config, workdir, start)
    # An objective may serve its own training arrays (a latent generator's cached latents).
    training_arrays = getattr(objective, "training_arrays", lambda: None)()
    make_batches = (
        functools.partial(arrays.make_train_iterator, training_arrays)
        if training_arrays is not None
        else functools.partial(pipeline.make_train_iterator, config.data)
    )
    batches = make_batches(
        global_batch_size=training.global_batch_size,
        sharding=sharding_lib.batch_sharding(mesh),
        seed=config.seed,
        start_step=start,
    )
    if start < training.total_steps:
        first = next(batches)
        step_fn = _compile_and_report(step_fn, state, first, workdir)
        batches = itertools.chain([first], batches)
    preemption = _PreemptionWatch()
    try:
        for step in range(start + 1, training.total_steps + 1):
            state, metrics = step_fn(state, next(batches))
            run.pending.append((step, metrics))
            run.limit_steps_in_flight()
            is_last = step == training.total_steps
            if step % training.log_every == 0 or is_last:
                run.flush_train_metrics()  # also updates the progress display with the loss
            else:
                run.progress.update(step)
            preempted = preemption.reached(step, checkpointer)
            if step % training.checkpoint_every == 0 or is_last or preempted:
                run.check_finite()  # never checkpoint a state that went non-finite
                meta = {"global_batch_size": training.global_batch_size}
                checkpointer.save(step, state, meta=meta)
            if preempted:
                checkpointer.wait()
                run.flush_train_metrics()
                run.progress.close()
                run.writer.close()
                raise Preempted(f"preempted: saved step {step} to {checkpointer.directory}", step)
            if step % training.eval_every == 0 and not is_last:
                _evaluate_split(run, objective, state, "eval", eval_step, mesh)
    finally:
        preemption.restore()  # the process's own SIGTERM handling, whatever happened
    run.progress.close()
    _evaluate_split(run, objective, state, "eval", eval_step, mesh)
    _evaluate_split(run, objective, state, "test", eval_step, mesh)
    run.writer.close()
    return state
