"""Throughput of the tokenizer train step, as a fraction of this machine's matmul peak.

  python experiments/benchmark_tokenizer.py [--config=configs/vqvae.py[:args]] [--steps 30]
      [--override model.channels='(32,64)' ...]

Measures, in one run (these machines are noisy, so only ratios are comparable across runs):
  * the peak fp32 matmul FLOP/s of the default device (a large square matmul),
  * the train step's FLOPs (XLA cost analysis of the compiled step) and its wall time on a
    synthetic batch,
  * the data pipeline's batches/s on its own,
and prints achieved FLOP/s, the ratio to the matmul peak, and steps/s of step vs pipeline.
"""

from __future__ import annotations

import argparse
import ast
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmgen_jax import benchmarking, config_lib, xla_flags
from mmgen_jax import sharding as sharding_lib
from mmgen_jax.data import pipeline
from mmgen_jax.trainers import get_objective_factory, loop
from mmgen_jax.trainers.state import make_optimizer


def load_config(spec: str, overrides: list[str]):
    path, _, arg = spec.partition(":")
    config = config_lib.load_config_file(path, arg)
    for item in overrides:
        key, _, value = item.partition("=")
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        try:
            node[leaf] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            node[leaf] = value
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/vqvae.py")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--override", nargs="*", default=[])
    args = parser.parse_args()
    xla_flags.configure_for_cpu()
    config = load_config(args.config, args.override)

    mesh = sharding_lib.make_mesh(config.mesh.data, config.mesh.fsdp)
    info = pipeline.dataset_info(config.data)
    objective = get_objective_factory(config.trainer)(config, info)
    tx, schedule = make_optimizer(config.optimizer, config.training.total_steps)
    batch_size = config.training.global_batch_size
    with jax.set_mesh(mesh):
        init, _, shardings = loop.abstract_state(config, objective, tx, info, mesh)
        state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
        rng = np.random.default_rng(0)
        batch = {
            "image": jnp.asarray(rng.uniform(-1, 1, (batch_size, *info["shape"])), jnp.float32),
            "label": jnp.zeros((batch_size,), jnp.int32),
        }
        step = loop.jit_train_step(config, objective, tx, schedule, shardings, mesh)
        compiled, _ = benchmarking.compile_timed(step, state, batch)
        flops = benchmarking.flops_of(compiled)
        state, _ = compiled(state, batch)
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        step_time = (time.perf_counter() - start) / args.steps

        batches = pipeline.make_train_iterator(
            config.data,
            global_batch_size=batch_size,
            sharding=sharding_lib.batch_sharding(mesh),
            seed=0,
        )
        next(batches)
        start = time.perf_counter()
        for _ in range(args.steps):
            jax.block_until_ready(next(batches))
        data_time = (time.perf_counter() - start) / args.steps

    peak = benchmarking.matmul_peak()
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}")
    print(f"matmul peak (fp32, 2048^2): {peak / 1e9:.1f} GFLOP/s")
    print(
        f"train step: {flops / 1e9:.2f} GFLOP, {step_time * 1e3:.1f} ms -> "
        f"{1 / step_time:.2f} steps/s, {flops / step_time / 1e9:.1f} GFLOP/s "
        f"= {flops / step_time / peak:.1%} of matmul peak"
    )
    print(
        f"input pipeline: {1 / data_time:.1f} batches/s "
        f"({data_time / step_time:.2f} x the step time)"
    )


if __name__ == "__main__":
    main()
