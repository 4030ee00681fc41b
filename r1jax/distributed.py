"""Several hosts, one program (JAX multi-controller): start-up, host data <-> global arrays, and
the few small values that cross hosts.

Every process runs the same code and calls the same jitted functions in the same order. Each
owns the rows of the batch that live on its devices: it reads, templates, samples, scores and
writes back only those (`local_range`, `global_array`, `local_data`). Only small values cross
hosts: metric sums (`all_sum`), agreements (`any_true`: a preemption, DAPO's "all hosts have
enough groups"), and start-up checks (`check_same`: same code and config everywhere). With one
process every function here is the identity, so the single-process path is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from r1jax.errors import ConfigError

log = logging.getLogger(__name__)
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


# -- start-up -------------------------------------------------------------------------------------


def cluster_environment() -> str | None:
    """The multi-host environment JAX can set itself up from, if any: "tpu" (a Cloud TPU pod
    slice with several workers), "slurm" (several tasks) or "mpi" (Open MPI, several ranks)."""
    env = os.environ
    if "," in env.get("TPU_WORKER_HOSTNAMES", "") or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu"
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in env:
        return "slurm"
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "mpi"
    return None


def initialize(
    coordinator: str = "",
    num_processes: int = 0,
    process_id: int = -1,
    *,
    timeout_s: int = 300,
) -> bool:
    """Joins the job's other processes; returns whether this is a multi-process job.

    Explicit (--coordinator=HOST:PORT --num_processes=N --process_id=I) wins; otherwise Cloud
    TPU pods, SLURM and Open MPI are detected; otherwise this is a single-process job. Must run
    before anything touches a JAX device. On CPU the collectives go through gloo.
    """
    explicit = bool(coordinator) or num_processes > 1
    detected = None if explicit else cluster_environment()
    if not explicit and detected is None:
        return False
    if explicit and not (coordinator and num_processes > 0 and 0 <= process_id < num_processes):
        raise ConfigError(
            "multi-process start needs --coordinator=HOST:PORT, --num_processes=N and "
            f"--process_id in [0, N); got {coordinator!r}, {num_processes}, {process_id}"
        )
    if explicit and process_id != 0:  # JAX aborts the process on an unreachable coordinator
        _wait_for(coordinator, timeout_s, process_id)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_threefry_partitionable", True)  # random bits independent of sharding
    kw = dict(initialization_timeout=int(timeout_s))
    if explicit:
        kw.update(coordinator_address=coordinator, num_processes=num_processes)
        kw.update(process_id=process_id)
    try:
        jax.distributed.initialize(**kw)
    except Exception as e:  # the runtime raises several types; all mean "no cluster"
        where = coordinator or f"the {detected} coordinator"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConnectionError(
            f"process {process_id if explicit else '?'} could not join the job at {where} within "
            f"{timeout_s:g} s: {first}"
        ) from None
    n_local = len(jax.local_devices())
    log.info("process %d of %d, %d local devices", process_index(), process_count(), n_local)
    return process_count() > 1


def _wait_for(address: str, timeout_s: float, process_id: int) -> None:
    """Polls HOST:PORT until process 0's coordinator accepts connections, or raises."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise ConnectionError(
                    f"process {process_id} could not reach the coordinator at {address} within "
                    f"{timeout_s:g} s ({e.strerror or e}); is process 0 running there?"
                ) from None
            time.sleep(0.5)


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_main() -> bool:
    """Process 0 writes metrics, samples, reports and the progress bar."""
    return jax.process_index() == 0


def code_fingerprint() -> str:
    """A hash of the r1jax package's source files (same code on every host or not)."""
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(_PACKAGE)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith((".py", ".json")) and "assets" not in root:
                full = os.path.join(root, name)
                h.update(os.path.relpath(full, _PACKAGE).encode())
                with open(full, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()[:12]


def check_same(what: str, value: str) -> None:
    """Raises on every process unless all processes pass the same `value` (compared by hash)."""
    if process_count() == 1:
        return
    digest = np.frombuffer(hashlib.sha256(value.encode()).digest()[:8], np.uint8)
    every = np.asarray(multihost_utils.process_allgather(digest)).reshape(process_count(), -1)
    mine = every[process_index()]
    differ = [i for i in range(len(every)) if not np.array_equal(every[i], mine)]
    if differ:
        other = differ[0]
        raise ConfigError(
            f"{what} differs between processes: process {process_index()} has "
            f"{mine.tobytes().hex()}, process {other} has {every[other].tobytes().hex()}; "
            "start every host with the same code and the same --config"
        )


# -- host rows <-> global arrays ------------------------------------------------------------------


def local_range(sharding, global_shape: Sequence[int], axis: int = 0) -> tuple[int, int]:
    """[start, stop) of the global rows (along `axis`) held by this process's devices."""
    index = sharding.addressable_devices_indices_map(tuple(global_shape))
    n = global_shape[axis]
    spans = sorted({s[axis].indices(n)[:2] for s in index.values()})
    start, stop = spans[0][0], spans[0][1]
    for a, b in spans[1:]:
        if a > stop:
            raise ValueError(
                f"process {process_index()}'s devices hold rows {spans} of {n}: not one contiguous "
                "block; build the mesh with r1jax.sharding.make_mesh (process-major device order)"
            )
        stop = max(stop, b)
    return start, stop


def global_array(local: np.ndarray, sharding, global_shape: Sequence[int]) -> jax.Array:
    """The global array whose part on this process's devices is `local`."""
    return jax.make_array_from_process_local_data(sharding, np.asarray(local), tuple(global_shape))


def from_host(value: np.ndarray, sharding) -> jax.Array:
    """A global array from a value every process holds whole (small arrays: heads, keys)."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])


def local_data(x: jax.Array, axis: int = 0) -> np.ndarray:
    """This process's part of a global array: the rows (along `axis`) its devices hold, whole
    along every other axis."""
    if process_count() == 1 or x.is_fully_addressable:
        return np.asarray(x) if x.is_fully_addressable else np.asarray(x.addressable_data(0))
    start, stop = local_range(x.sharding, x.shape, axis)
    shape = list(x.shape)
    shape[axis] = stop - start
    out = np.empty(shape, x.dtype)
    for shard in x.addressable_shards:
        idx = list(shard.index)
        a, b, _ = idx[axis].indices(x.shape[axis])
        idx[axis] = slice(a - start, b - start)
        out[tuple(idx)] = np.asarray(shard.data)
    return out


def fetch(tree):
    """Small global arrays (metrics, counters) as NumPy values, the same on every process."""

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


# -- small values across hosts --------------------------------------------------------------------


def gather(value) -> np.ndarray:
    """[process_count, ...]: every process's `value` (a small NumPy array or scalar)."""
    value = np.ascontiguousarray(value)
    if process_count() == 1:
        return value[None]
    # As raw bytes, so that float64 and int64 cross exactly (JAX would narrow them to 32 bits).
    raw = np.asarray(multihost_utils.process_allgather(value.reshape(-1).view(np.uint8)))
    return raw.reshape(process_count(), -1).view(value.dtype).reshape((-1, *value.shape))


def gather_objects(obj) -> list:
    """Every process's JSON-able `obj`, in process order (e.g. evaluation records)."""
    if process_count() == 1:
        return [obj]
    raw = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    size = int(gather(np.int64(raw.size)).max())
    padded = np.zeros(size + 8, np.uint8)
    padded[:8] = np.frombuffer(np.int64(raw.size).tobytes(), np.uint8)
    padded[8 : 8 + raw.size] = raw
    out = []
    for row in gather(padded):
        n = int(row[:8].view(np.int64)[0])
        out.append(json.loads(row[8 : 8 + n].tobytes().decode()))
    return out


def all_sum(value):
    """Elementwise sum of a small array (or a dict of them) over all processes."""
    if isinstance(value, dict):
        keys = sorted(value)
        total = all_sum(np.asarray([np.asarray(value[k], np.float64) for k in keys]))
        return dict(zip(keys, total.tolist()))
    return gather(np.asarray(value, np.float64)).sum(0)


def any_true(flag: bool) -> bool:
    """True on every process if it is True on any (a preemption, a stop condition)."""
    return bool(gather(np.int32(bool(flag))).max())


def barrier(name: str) -> None:
    if process_count() > 1:
        multihost_utils.sync_global_devices(name)
