"""Device mesh and the one table that maps logical axis names to mesh axes.

Every parameter and activation is annotated with *logical* axis names ("embed", "q_heads",
"batch", ...). `RULES` says which mesh axis (if any) each logical name is split over. A rule is
dropped for a tensor whose dimension the mesh axis does not divide (e.g. 2 KV heads on a
4-way tensor axis), so a small model still runs on a big mesh; the tensor is then replicated
along that mesh axis.

Mesh axes: "data" (pure data parallel: batch only), "fsdp" (batch and parameters, ZeRO-3
style), "tensor" (heads, MLP and vocabulary: Megatron style), "expert" (MoE routed experts;
outside the MoE layers it splits the batch like "data", and in them each device gathers the
tokens of its expert group and runs its own experts: r1jax/models/moe.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from r1jax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor", "expert")

# logical axis -> mesh axes it is split over, in order of preference.
RULES: dict[str, tuple[str, ...]] = {
    "batch": ("data", "fsdp", "expert"),
    "layers": (),
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "q_heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": (),
    "mlp": ("tensor",),
    "expert": ("expert",),  # MoE routed experts (r1jax/models/moe.py)
    "lora": ("fsdp",),  # MLA's low-rank dims (kv_lora_rank, q_lora_rank)
    "norm": (),
    "seq": (),
}


def make_mesh(shape: Sequence[tuple[str, int]] = (("fsdp", -1),), devices=None) -> Mesh:
    """Builds a mesh from [(axis, size), ...]; one size may be -1 (all remaining devices).

    Axes not named get size 1, so every mesh has the three axes of MESH_AXES. On one process a
    mesh smaller than the device count (and without -1) uses the first devices, e.g.
    [("fsdp", 1)] for one. With several processes the mesh spans every device, and when `shape`
    names no "data" axis it describes one host: "data" is then the number of processes (data
    parallel across hosts, FSDP and tensor within a host). Devices are ordered process by
    process, so each process's devices hold one contiguous block of the batch.
    """
    devices = list(jax.devices() if devices is None else devices)
    hosts = len({d.process_index for d in devices})
    sizes = dict.fromkeys(MESH_AXES, 1)
    for name, size in shape:
        if name not in sizes:
            raise ConfigError(f"config.mesh: unknown mesh axis {name!r}; expected {MESH_AXES}")
        sizes[name] = int(size)
    if hosts > 1 and "data" not in dict(shape):
        sizes["data"] = hosts
    known = math.prod(s for s in sizes.values() if s != -1)
    free = [n for n, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ConfigError(f"config.mesh: at most one axis may be -1, got {free}")
    if free:
        if len(devices) % known:
            raise ConfigError(
                f"config.mesh {tuple(shape)}: {len(devices)} devices not divisible by {known}"
            )
        sizes[free[0]] = len(devices) // known
    total = math.prod(sizes.values())
    if hosts == 1 and not free and total < len(devices):
        devices = devices[:total]
    if total != len(devices):
        raise ConfigError(
            f"config.mesh {tuple(shape)} (as {sizes}) needs {total} devices, but the job has "
            f"{len(devices)} ({hosts} process{'es' if hosts > 1 else ''})"
        )
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    grid = np.asarray(devices).reshape([sizes[n] for n in MESH_AXES])
    return Mesh(grid, MESH_AXES)


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """PartitionSpec for a tensor with the given logical axes, honouring divisibility."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {tuple(axes)} do not match shape {tuple(shape)}")
    used: set[str] = set()
    spec = []
    for name, dim in zip(axes, shape, strict=True):
        if name is not None and name not in RULES:
            raise ValueError(f"logical axis {name!r} has no entry in r1jax.sharding.RULES")
        chosen = []
        for mesh_axis in RULES.get(name, ()) if name else ():
            size = mesh.shape[mesh_axis]
            split = math.prod(mesh.shape[a] for a in chosen) * size
            if size > 1 and mesh_axis not in used and dim % split == 0:
                chosen.append(mesh_axis)
        used.update(chosen)
        spec.append(tuple(chosen) if len(chosen) > 1 else (chosen[0] if chosen else None))
    return PartitionSpec(*spec)


def named_sharding(axes, shape, mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, shape, mesh))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int, batch: int | None = None) -> NamedSharding:
    """Sharding for an array whose leading axis is the batch (data, fsdp and expert axes)."""
    shape = (batch if batch is not None else batch_divisor(mesh),) + (1,) * (ndim - 1)
    return named_sharding(("batch",) + (None,) * (ndim - 1), shape, mesh)


def batch_divisor(mesh: Mesh) -> int:
    """Batch sizes must be a multiple of this to be split over the mesh's batch axes."""
    return mesh.shape["data"] * mesh.shape["fsdp"] * mesh.shape["expert"]


def under_mesh(fn, shardings):
    """fn called under jax.set_mesh(mesh) when the mesh of `shardings` (a pytree holding
    NamedShardings) has an "expert" axis > 1, so that moe.routed_experts traces the expert-parallel
    path (a jit traced without a mesh set leaves the expert-sharded weights to GSPMD instead:
    the same result, with whatever communication it picks), or is a TPU mesh of several
    devices, so that attention may take splash in shard_map (attention.splash_sharded; XLA
    does not partition the kernel). Any other fn is unchanged."""
    named = [s for s in jax.tree.leaves(shardings) if isinstance(s, jax.sharding.NamedSharding)]
    if not named:
        return fn
    mesh = named[0].mesh
    splash = mesh.size > 1 and mesh.devices.flat[0].platform == "tpu"
    if mesh.shape.get("expert", 1) == 1 and not splash:
        return fn

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with jax.set_mesh(mesh):
            return fn(*args, **kwargs)

    return call
