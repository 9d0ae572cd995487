"""Device mesh, logical-axis rules and the shardings of the train state and the batch.

The mesh has axes ('data', 'fsdp'). The batch is split over both axes. Parameters, their EMA and
the optimizer moments are placed by the Flax logical-axis names of the kernels
(`nn.with_logical_partitioning`: 'embed', 'mlp', 'heads' in the DiT, 'conv_in'/'conv_out' in
convolutions) mapped to mesh axes by the rules held in the config (`mesh.rules`). With the
default rules every kernel is split over 'fsdp' along one axis (FSDP / ZeRO-3: XLA gathers it
for the matmul and reduce-scatters its gradient). Two fallbacks keep any config valid on any
mesh: a named axis whose size the mesh axes do not divide is replicated instead, and an
unannotated leaf of at least `mesh.fallback_min_size` elements is split over 'fsdp' along its
largest divisible axis. Activations are constrained with `constrain_activation`
('activation_batch' over the batch axes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmgen_jax import xla_flags

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def initialize_distributed() -> None:
    """Join the multi-controller runtime (every entry point's `--distributed`).

    On TPU VMs and Slurm/Kubernetes clusters JAX finds the coordinator itself; elsewhere (e.g.
    several processes on one machine) set MMGEN_COORDINATOR_ADDRESS (host:port),
    MMGEN_NUM_PROCESSES and MMGEN_PROCESS_ID. CPU-only processes exchange collectives over gloo.
    """
    if xla_flags.runs_on_cpu_only():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if os.environ.get("MMGEN_COORDINATOR_ADDRESS"):
        kwargs = dict(
            coordinator_address=os.environ["MMGEN_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["MMGEN_NUM_PROCESSES"]),
            process_id=int(os.environ["MMGEN_PROCESS_ID"]),
        )
    jax.distributed.initialize(**kwargs)


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


DEFAULT_RULES = (
    ("activation_batch", BATCH_AXES),
    ("activation_embed", None),
    ("embed", "fsdp"),
    ("mlp", None),
    ("heads", None),
    ("conv_in", None),
    ("conv_out", "fsdp"),
)
DEFAULT_FALLBACK_MIN_SIZE = 2**14


def normalize_rules(rules: Sequence[Sequence[Any]]) -> tuple[tuple[str, Any], ...]:
    """Rules as Flax wants them, also after a JSON round trip (lists back to tuples)."""
    normalized = []
    for rule in rules:
        if len(rule) != 2:
            raise ValueError(f"a sharding rule is (logical name, mesh axes), got {rule!r}")
        name, axes = rule
        axes = tuple(axes) if isinstance(axes, list | tuple) else axes
        for axis in axes if isinstance(axes, tuple) else (axes,):
            if axis is not None and axis not in MESH_AXES:
                raise ValueError(
                    f"sharding rule {rule!r} names mesh axis {axis!r}; "
                    f"the mesh axes are {MESH_AXES}"
                )
        normalized.append((str(name), axes))
    return tuple(normalized)


def _axes_size(mesh: Mesh, axes: Any) -> int:
    axes = axes if isinstance(axes, tuple) else (axes,)
    return int(np.prod([mesh.shape[a] for a in axes if a is not None]))


def leaf_spec(
    shape: Sequence[int], spec: PartitionSpec, mesh: Mesh, fallback_min_size: int
) -> PartitionSpec:
    """The mesh spec of one leaf: `spec` with indivisible axes replicated, or the fallback."""
    entries = list(spec) + [None] * (len(shape) - len(spec))
    entries = [
        None if axes is None or shape[dim] % _axes_size(mesh, axes) else axes
        for dim, axes in enumerate(entries)
    ]
    fsdp = mesh.shape["fsdp"]
    if all(e is None for e in entries) and fsdp > 1 and np.prod(shape) >= fallback_min_size:
        divisible = [dim for dim, size in enumerate(shape) if size % fsdp == 0]
        if divisible:
            entries[max(divisible, key=lambda dim: shape[dim])] = "fsdp"
    while entries and entries[-1] is None:
        entries.pop()
    return PartitionSpec(*entries)


def unbox(tree: Any) -> Any:
    """`tree` with every logical-axis box replaced by its value (no sharding constraint is
    applied, so it also works on abstract trees outside jit)."""
    return jax.tree.map(
        lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.meta.AxisMetadata) else x,
        tree,
        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata),
    )


def state_shardings(
    boxed_abstract_state: Any,
    mesh: Mesh,
    rules: Sequence[Sequence[Any]] = DEFAULT_RULES,
    fallback_min_size: int = DEFAULT_FALLBACK_MIN_SIZE,
) -> Any:
    """NamedShardings for every leaf of an abstract train state whose parameters are still boxed
    with their logical axis names; the result has the structure of the unboxed state."""
    logical = nn.get_partition_spec(boxed_abstract_state)
    mesh_specs = nn.logical_to_mesh(logical, list(normalize_rules(rules)))
    unboxed = unbox(boxed_abstract_state)
    return jax.tree.map(
        lambda spec, leaf: NamedSharding(
            mesh, leaf_spec(leaf.shape, spec, mesh, fallback_min_size)
        ),
        mesh_specs,
        unboxed,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def host_array(x: Any) -> np.ndarray:
    """The whole value of an array as numpy on every process, also for a global array whose
    shards live on other hosts (gathered with `process_allgather`; every process must call)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def per_device_bytes(tree: Any) -> int:
    """Bytes of `tree` (arrays or ShapeDtypeStructs with shardings) held by one device."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shard = leaf.sharding.shard_shape(leaf.shape)
        total += int(np.prod(shard)) * np.dtype(leaf.dtype).itemsize
    return total
