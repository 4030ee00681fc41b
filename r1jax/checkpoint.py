"""Training-state checkpoints in the run directory (orbax), and what a resume must agree on.

A checkpoint is one orbax step directory holding
  state  every array the run needs to continue exactly (parameters, optimizer state, step
         counter, RNG key data, a reference policy...), restored straight into the shardings
         of the running job, so it may have another mesh or process count than the saver;
  extra  JSON: the data position and the config the run was started with.
Every process calls save and restore; each writes and reads its own shards. Model
directories (what a finished stage exports) are r1jax.models.store's.

Nothing non-finite is saved, and nothing unverified is resumed from: `save` refuses a state
with a NaN or inf and records a checksum of every array (a wrapping sum of its bits, the same on
any mesh) in `extra`; `restore_latest` takes the newest checkpoint that reads back whole, finite
and with the same checksums, falling back to older ones with a warning. Every process reaches
the same verdict (the checks are global reductions; the fallback is agreed by `any_true`).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from r1jax import distributed, files
from r1jax.errors import ConfigError, StateError, one_line

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


def _bit_sum(x) -> jax.Array:
    """A wrapping uint32 sum of the bits of `x`: order-free, so equal on any sharding."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_ or x.dtype.itemsize < 4:
        bits = x.astype(jnp.uint8) if x.dtype == jnp.bool_ else x
        bits = jax.lax.bitcast_convert_type(bits, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))
    else:  # 8-byte values become pairs of uint32 words
        bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jnp.sum(bits.astype(jnp.uint32), dtype=jnp.uint32)


@jax.jit
def _summary(state):
    """(finite per leaf, bit sum per leaf), in tree-leaf order."""
    leaves = jax.tree.leaves(state)
    finite = [
        jnp.isfinite(x).all() if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
        for x in leaves
    ]
    return jnp.stack(finite), jnp.stack([_bit_sum(x) for x in leaves])


def verify(state) -> tuple[list[str], list[int]]:
    """(names of the leaves with a NaN or inf, the bit sum of every leaf), the same on every
    process."""
    finite, sums = distributed.fetch(_summary(state))
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    bad = [n for n, ok in zip(names, finite) if not ok]
    return bad, [int(x) for x in np.asarray(sums)]


class Checkpointer:
    def __init__(self, workdir, keep: int = 2):
        _use_replica_parallel_for_large_arrays_only()
        self.dir = files.path(workdir) / "checkpoints"
        self.mngr = ocp.CheckpointManager(
            self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def save(self, step: int, state, extra: dict) -> None:
        """Writes checkpoint `step`; a state with a NaN or inf is refused (StateError)."""
        bad, sums = verify(state)
        if distributed.any_true(bool(bad)):
            raise StateError(
                f"step {step}: not checkpointed: non-finite values in the state "
                f"({', '.join(bad[:3]) or 'on another process'}); the checkpoints in {self.dir} "
                "are the last good ones"
            )
        extra = {**extra, "bit_sums": sums}
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)
        )
        self.mngr.save(step, args=args, force=True)

    def restore_latest(self, state_like) -> tuple[int, object, dict] | None:
        """(step, state, extra) of the newest checkpoint that reads back whole, finite and with
        the checksums it was saved with; None if there is none. Newer unusable ones are skipped
        with a one-line warning; if every one is unusable, a StateError names them."""
        self.mngr.reload()
        steps = distributed.gather_objects(sorted(self.mngr.all_steps(), reverse=True))[0]
        unusable = []
        for step in steps:
            try:
                state, extra = self.restore(step, state_like)
                bad, sums = verify(state)
                saved = extra.get("bit_sums")
                problem = f"non-finite values in {bad[0]}" if bad else ""
                if saved is not None and saved != sums:
                    problem = problem or "its arrays differ from what was saved (checksums)"
            except Exception as e:  # noqa: BLE001 (any unreadable file: fall back)
                problem = one_line(e).split(" [tensorstore_spec")[0][:400]
            if distributed.any_true(bool(problem)):  # every process falls back alike
                unusable.append(f"step {step}: {problem or 'unreadable on another process'}")
                continue
            if unusable:
                log.warning(
                    "checkpoint %s unusable (%s); resuming from step %d (moved aside to %s)",
                    self.dir / str(steps[0]),
                    "; ".join(unusable),
                    step,
                    self.dir.parent / "unusable_checkpoints",
                )
                self._set_aside([s for s in steps if s > step])
            return step, state, extra
        if unusable:
            raise StateError(
                f"no usable checkpoint in {self.dir} ({'; '.join(unusable)}); move it away to "
                "start over"
            )
        return None

    def _set_aside(self, steps) -> None:
        """Moves unusable checkpoints to WORKDIR/unusable_checkpoints (kept for a post-mortem;
        their steps are redone and saved again)."""
        if distributed.is_main():
            aside = self.dir.parent / "unusable_checkpoints"
            aside.mkdir(parents=True, exist_ok=True)
            for step in steps:
                dst = aside / str(step)
                if dst.exists():
                    dst.rmtree()
                (self.dir / str(step)).rename(dst)
        distributed.barrier("checkpoints_set_aside")
        self.mngr.reload()

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
