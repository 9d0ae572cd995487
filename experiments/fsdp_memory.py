"""Per-device memory of a compiled train step: one device against a data x fsdp mesh.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/fsdp_memory.py \
      [--config configs/dit.py:model=DiT-S/2] [--data 2 --fsdp 4] [--batch 16]

Builds the config's objective, shards the train state with the config's logical-axis rules on
each mesh, compiles the train step ahead of time (nothing is trained) and prints XLA's memory
analysis per device (arguments = train state + batch, outputs, temporaries) beside the state's
own per-device bytes, with the ratio between the two meshes.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from mmgen_jax import benchmarking, config_lib, xla_flags
from mmgen_jax import sharding as sharding_lib
from mmgen_jax.data import pipeline
from mmgen_jax.trainers import get_objective_factory, loop
from mmgen_jax.trainers.state import make_optimizer


def compiled_memory(config, devices) -> dict[str, float]:
    mesh = sharding_lib.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
    info = pipeline.dataset_info(config.data)
    objective = get_objective_factory(config.trainer)(config, info)
    tx, schedule = make_optimizer(config.optimizer, config.training.total_steps)
    rules = sharding_lib.normalize_rules(config.mesh.rules)
    import flax.linen as nn

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        _, abstract, shardings = loop.abstract_state(config, objective, tx, info, mesh)
        state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
        )
        batch_sharding = sharding_lib.batch_sharding(mesh)
        size = config.training.global_batch_size
        batch = {
            "image": jax.ShapeDtypeStruct(
                (size, *info["shape"]), jnp.float32, sharding=batch_sharding
            ),
            "label": jax.ShapeDtypeStruct((size,), jnp.int32, sharding=batch_sharding),
        }
        step = loop.jit_train_step(config, objective, tx, schedule, shardings, mesh)
        compiled = step.lower(state, batch).compile()
    report = {k: v / 2**20 for k, v in benchmarking.memory_of(compiled).items()}
    report["state_per_device"] = sharding_lib.per_device_bytes(state) / 2**20
    report["params_per_device"] = sharding_lib.per_device_bytes(state.params) / 2**20
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/dit.py:model=DiT-S/2")
    parser.add_argument("--data", type=int, default=2)
    parser.add_argument("--fsdp", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    xla_flags.configure_for_cpu()
    path, _, arg = args.config.partition(":")
    config = config_lib.load_config_file(path, arg or None)
    config = config.unlock()
    config.training.global_batch_size = args.batch
    one = config.copy_and_resolve_references()
    one.mesh.data, one.mesh.fsdp = 1, 1
    many = config.copy_and_resolve_references()
    many.mesh.data, many.mesh.fsdp = args.data, args.fsdp
    reports = {
        "1 device": compiled_memory(one, jax.devices()[:1]),
        f"{args.data}x{args.fsdp} mesh": compiled_memory(many, None),
    }
    names = list(next(iter(reports.values())))
    print(f"{args.config}, global batch {args.batch}; MiB per device")
    print(f"{'':<28}" + "".join(f"{label:>16}" for label in reports) + f"{'ratio':>10}")
    for name in names:
        values = [reports[label][name] for label in reports]
        ratio = values[0] / values[1] if values[1] else float("nan")
        print(f"{name:<28}" + "".join(f"{v:16.2f}" for v in values) + f"{ratio:10.2f}")


if __name__ == "__main__":
    main()
