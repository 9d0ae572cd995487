"""Device mesh, logical-axis rules and the shardings of the train state and the batch.

The mesh has axes ('data', 'fsdp'). The batch is split over both axes; parameters are placed by
Flax logical-axis annotations mapped to mesh axes through the rules held in the config, and
unannotated leaves are replicated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'fsdp') mesh over all devices; one axis may be -1 to take what is left."""
    devices = list(devices if devices is not None else jax.devices())
    count = len(devices)
    sizes = [data, fsdp]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh data={data}, fsdp={fsdp}: at most one axis may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if known <= 0 or count % known:
        raise ValueError(
            f"mesh data={data}, fsdp={fsdp} does not divide the {count} available devices"
        )
    sizes = [count // known if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != count:
        raise ValueError(
            f"mesh data={sizes[0]} x fsdp={sizes[1]} = {int(np.prod(sizes))} devices, "
            f"but {count} are available"
        )
    return jax.make_mesh(
        tuple(sizes),
        MESH_AXES,
        axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
        devices=devices,
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every mesh axis; other axes replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_shards(mesh: Mesh) -> int:
    """How many pieces the global batch is split into."""
    return int(np.prod([mesh.shape[axis] for axis in BATCH_AXES]))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    shards = batch_shards(mesh)
    if global_batch_size % shards:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by the {shards} batch "
            f"shards of the mesh {dict(mesh.shape)}"
        )
    if global_batch_size % jax.process_count():
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by the "
            f"{jax.process_count()} processes"
        )


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = ()) -> Any:
    """NamedShardings for every leaf of an abstract train state.

    Leaves boxed with `nn.with_logical_partitioning` follow `rules`; everything else is
    replicated.
    """
    specs = nn.get_partition_spec(abstract_state)
    return nn.logical_to_mesh_sharding(specs, mesh, list(rules))
