"""Training-state checkpoints in the run directory, auto-resume, and a clean SIGTERM stop.

A checkpoint is one orbax step directory holding
  state  parameters, optimizer state, step counter, RNG key data (and the reference policy
         when the run keeps one), restored straight into their shardings;
  extra  JSON: the data iterator position, counters, and the config the run was started with.

Resume order (first that applies): 1. the latest checkpoint in WORKDIR/checkpoints; 2. the
model named by the config (config.model.init); 3. random initialisation.
"""

from __future__ import annotations

import logging
import os
import signal

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(self, workdir: str, keep: int = 2):
        self.dir = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.mngr = ocp.CheckpointManager(
            self.dir,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.mngr.latest_step()

    def save(self, step: int, state, extra: dict) -> None:
        self.mngr.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)
            ),
            force=True,
        )

    def restore(self, step: int, state_like) -> tuple[dict, dict]:
        """Restores into the shapes, dtypes and shardings of `state_like` (arrays or structs)."""
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state_like
        )
        out = self.mngr.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), extra=ocp.args.JsonRestore()
            ),
        )
        return out["state"], out["extra"]

    def close(self) -> None:
        self.mngr.wait_until_finished()
        self.mngr.close()


class StopSignal:
    """Turns SIGTERM (a preemption) into a flag the loop checks after each step."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        def handler(signum, frame):
            log.warning("SIGTERM: saving a checkpoint after this step, then exiting")
            self.requested = True

        try:
            self._old = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (e.g. some notebook runners): no handler
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
