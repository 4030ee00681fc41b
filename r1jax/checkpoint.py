"""Training-state checkpoints in the run directory (orbax), and what a resume must agree on.

A checkpoint is one orbax step directory holding
  state  every array the run needs to continue exactly (parameters, optimizer state, step
         counter, RNG key data, a reference policy...), restored straight into the shardings
         of the running job, so it may have another mesh or process count than the saver;
  extra  JSON: the data position and the config the run was started with.
Every process calls save and restore; each writes and reads its own shards. Model
directories (what a finished stage exports) are r1jax.models.store's.
"""

from __future__ import annotations

import logging

import jax
import orbax.checkpoint as ocp

from r1jax import files
from r1jax.errors import ConfigError

log = logging.getLogger(__name__)

# Fields a resumed run may change (the schedule of logging, the length of the run, how the
# hardware is used); anything else changing between a checkpoint and its resumption is refused.
RESUMABLE_CHANGES = (
    "steps",
    "log_every",
    "eval_every",
    "ckpt_every",
    "samples_every",
    "num_samples_logged",
    "keep_checkpoints",
    "reward_pool",
    "eval",
    "mesh",
    "micro_batch",
    "compilation_cache_dir",
    "optim.total_steps",
)

# Orbax's replica-parallel save cuts each replicated array into one slice per replica with eager
# jax ops: one compile per (shape, device) on the first save, the "compile storm" of orbax#2934
# (seconds on CPU, minutes for a large model on a pod). Only large slices gain from spreading the
# writes, so arrays whose per-replica slice is smaller than this are saved by one replica.
REPLICA_PARALLEL_MIN_BYTES = 64 << 20


def _use_replica_parallel_for_large_arrays_only() -> None:
    default = ocp.type_handlers.get_type_handler(jax.Array)
    if (
        getattr(default, "_min_slice_bytes_for_replica_parallel", None)
        == REPLICA_PARALLEL_MIN_BYTES
    ):
        return
    handler = ocp.type_handlers.ArrayHandler(
        min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_BYTES,
        array_metadata_store=getattr(default, "_array_metadata_store", None),
    )
    absl_log = logging.getLogger("absl")  # orbax warns on every override; this one is intended
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)
    try:
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    finally:
        absl_log.setLevel(level)


class Checkpointer:
    def __init__(self, workdir, keep: int = 2):
        _use_replica_parallel_for_large_arrays_only()
        self.dir = files.path(workdir) / "checkpoints"
        self.mngr = ocp.CheckpointManager(
            self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def latest_step(self) -> int | None:
        return self.mngr.latest_step()

    def save(self, step: int, state, extra: dict) -> None:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)
        )
        self.mngr.save(step, args=args, force=True)

    def restore(self, step: int, state_like) -> tuple[dict, dict]:
        """Restores into the shapes, dtypes and shardings of `state_like` (arrays or structs)."""
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state_like
        )
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(target), extra=ocp.args.JsonRestore()
        )
        out = self.mngr.restore(step, args=args)
        return out["state"], out["extra"]

    def close(self) -> None:
        self.mngr.wait_until_finished()
        self.mngr.close()


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume(saved: dict, current: dict, resumable=RESUMABLE_CHANGES) -> None:
    """A run resumed with a different config would silently mix two experiments: refuse."""
    if not saved:
        return
    a, b = _flatten(saved), _flatten(current)
    changed = sorted(
        k
        for k in set(a) | set(b)
        if a.get(k) != b.get(k) and not any(k == p or k.startswith(p + ".") for p in resumable)
    )
    if changed:
        diff = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed[:8])
        raise ConfigError(
            f"the checkpoint in this workdir was made with a different config ({diff}); use a "
            "new --workdir, or restore the old values"
        )
