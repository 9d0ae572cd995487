"""Latent generator training steps with and without cached latents (`generator.cache_latents`).

  python experiments/bench_latent_cache.py --tokenizer_workdir RUN/tokenizer \
      [--config configs/video_quickstart.py] [--batch 64] [--steps 20] [--rounds 3]

Builds the generator stage of a staged config (default: the video quickstart) on the trained
tokenizer in `--tokenizer_workdir`, then times the same jit-compiled training step fed two ways:
  images   batches of signals from the TFDS pipeline, encoded by the frozen tokenizer every step
  cached   batches of latents encoded once (`data/arrays.py`)
in alternating rounds of `--steps` steps (so both see the same machine load), and prints the
steps/s of each and their ratio, with the encoder pass's share of the uncached step.
"""

from __future__ import annotations

import argparse
import time

import jax

from mmgen_jax import config_lib
from mmgen_jax import sharding as sharding_lib
from mmgen_jax.data import arrays, pipeline
from mmgen_jax.trainers import loop
from mmgen_jax.trainers.generator import GeneratorObjective
from mmgen_jax.trainers.state import make_optimizer


def _steps_per_second(step_fn, state, batches, steps: int):
    state, metrics = step_fn(state, next(batches))  # also waits for what came before
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step_fn(state, next(batches))
    jax.block_until_ready(metrics)
    return state, steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer_workdir", required=True)
    parser.add_argument("--config", default="configs/video_quickstart.py")
    parser.add_argument("--stage", default="generator")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    config = config_lib.load_config_file(args.config).stages[args.stage]
    config.unlock()
    config.generator.tokenizer_workdir = args.tokenizer_workdir
    config.generator.cache_latents = True
    config.training.global_batch_size = args.batch
    info = pipeline.dataset_info(config.data)
    objective = GeneratorObjective(config, info)
    tx, schedule = make_optimizer(config.optimizer, config.training.total_steps)
    mesh = sharding_lib.make_mesh()
    shardings_of_batch = sharding_lib.batch_sharding(mesh)
    common = dict(global_batch_size=args.batch, sharding=shardings_of_batch, seed=0)
    with jax.set_mesh(mesh):
        init, _, shardings = loop.abstract_state(config, objective, tx, info, mesh)
        state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
        start = time.perf_counter()
        cached = arrays.make_train_iterator(objective.training_arrays(), **common)
        encode_once = time.perf_counter() - start
        feeds = {"images": pipeline.make_train_iterator(config.data, **common), "cached": cached}
        step_fn = loop.jit_train_step(config, objective, tx, schedule, shardings, mesh)
        rates = {name: [] for name in feeds}
        for _ in range(args.rounds):
            for name, batches in feeds.items():
                state, rate = _steps_per_second(step_fn, state, batches, args.steps)
                rates[name].append(rate)
    best = {name: max(values) for name, values in rates.items()}
    print(
        f"{args.config} stage {args.stage}, batch {args.batch}, {jax.device_count()} devices "
        f"({jax.devices()[0].platform}); encoding the training split once took {encode_once:.1f} s"
    )
    for name, values in rates.items():
        rounds = ", ".join(f"{value:.2f}" for value in values)
        print(f"{name:>7}: {best[name]:6.2f} steps/s (rounds: {rounds})")
    ratio = best["cached"] / best["images"]
    print(
        f"cached / images: {ratio:.2f}x; the encoder pass is {1 - 1 / ratio:.0%} of an uncached "
        f"step"
    )


if __name__ == "__main__":
    main()
