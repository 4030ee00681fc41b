"""The one training loop: every stage hands it a `Run` (its state and one step) and the loop does
the rest, the same way for GRPO, SFT, distillation and the reward model:

  resume    the newest usable checkpoint in WORKDIR/checkpoints (state, data position; a
            corrupt or non-finite newer one is skipped with a warning), refusing a changed
            config; rows of metrics/samples logged after it are dropped (redone);
  each step the stage's step -> metrics -> non-finite guard (config.max_nonfinite_in_a_row
            skipped updates in a row stop the run, after checkpointing the last good state:
            the guard never lets a non-finite update in, and the checkpointer refuses a
            non-finite state) -> periodic evaluation
            -> metrics.jsonl / TensorBoard / progress bar -> samples.jsonl -> checkpoint;
  SIGTERM   (a preemption, on any host) -> every host checkpoints the same step, then stops;
  the end   the stage's `finish` (e.g. export WORKDIR/model), and the last logged metrics.

Config keys it reads: steps, log_every, ckpt_every, eval_every, samples_every,
num_samples_logged, max_nonfinite_in_a_row, keep_checkpoints (configs/common.loop()).
Multi-host: every process runs the loop; process 0 writes the files; step times are compared
across hosts (`time/step_skew`: slowest host over the median).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from r1jax import checkpoint, distributed, files
from r1jax.metrics import MetricsWriter, Timer, progress, truncate_after

log = logging.getLogger(__name__)
SAMPLES, EVAL_SAMPLES = "samples.jsonl", "eval_samples.jsonl"


@dataclasses.dataclass
class Run:
    """What a stage hands to the loop.

    state: the checkpointed pytree (train state, reference policy, RNG key data...).
    step(step, state) -> (state, metrics, samples): one loop step; metrics are {key: value}
      (global values), samples a list of dicts for samples.jsonl (may be empty).
    data: has get_state() / set_state(dict): the data position (checkpointed).
    evaluate(step, state) -> (metrics, records): held-out evaluation; records go to
      eval_samples.jsonl.
    finish(state): after the last step (not after a SIGTERM stop), e.g. export the model.
    first_metrics: logged with the step-0 evaluation.
    """

    name: str
    state: Any
    step: Callable
    data: Any = None
    evaluate: Callable | None = None
    finish: Callable | None = None
    first_metrics: dict = dataclasses.field(default_factory=dict)
    postfix: tuple[str, ...] = ("train/loss",)
    timer: Timer = dataclasses.field(default_factory=Timer)


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
        except ValueError:  # not the main thread (some notebook runners): no handler
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _config_json(config) -> dict:
    return json.loads(config.to_json_best_effort())


def _due(step: int, every: int) -> bool:
    return bool(every) and step % every == 0


def run(config, workdir, r: Run) -> dict:
    """Trains `r` for config.steps steps in `workdir`; returns the last logged metrics."""
    c, wd = config, files.path(workdir)
    main = distributed.is_main()
    ckpt = checkpoint.Checkpointer(wd, keep=c.get("keep_checkpoints", 2))
    config_json = _config_json(c)
    found = ckpt.restore_latest(r.state)
    start = found[0] if found else 0
    if found:
        r.state, extra = found[1], found[2]
        checkpoint.check_resume(extra.get("config", {}), config_json)
        if r.data is not None:
            r.data.set_state(extra["data"])
        for name in ("metrics.jsonl", SAMPLES, EVAL_SAMPLES):
            truncate_after(wd / name, start)
        log.warning("resumed from %s at step %d", ckpt.dir, start)
    if main:
        files.write_json(wd / "config.json", config_json)
    writer = MetricsWriter(wd)
    bar = progress(c.steps, start, r.name)
    last: dict = {}
    try:
        if start == 0 and r.evaluate is not None and c.get("eval_every", 0):
            m, records = r.evaluate(0, r.state)
            last = writer.write(0, {**m, **r.first_metrics})
            _append(wd / EVAL_SAMPLES, 0, records, main)
        last = _steps(c, wd, r, start, ckpt, writer, bar) or last
    finally:  # also on errors: wait for pending checkpoint writes
        bar.close()
        writer.close()
        ckpt.close()
    return last


def _append(path, step: int, rows, main: bool) -> None:
    if main and rows:
        files.append_jsonl(path, [{"step": step, **row} for row in rows])


def _steps(c, wd, r: Run, start, ckpt, writer, bar) -> dict:
    main, last, bad_in_a_row = distributed.is_main(), {}, 0
    extra = lambda: {  # noqa: E731
        "data": r.data.get_state() if r.data is not None else {},
        "config": _config_json(c),
    }
    with StopSignal() as stop:
        for step in range(start + 1, c.steps + 1):
            t0 = time.perf_counter()
            r.state, m, samples = r.step(step, r.state)
            m = {k: float(np.asarray(v)) for k, v in m.items()}
            m["time/step_s"] = dt = time.perf_counter() - t0
            times = distributed.gather(np.float64(dt))
            m["time/step_skew"] = float(times.max() / max(np.median(times), 1e-9))
            skipped = m.get("train/skipped_updates", m.get("train/skipped", 0.0))
            bad_in_a_row = bad_in_a_row + 1 if skipped else 0
            last_step = step == c.steps
            evaluated = (
                r.evaluate is not None
                and bool(c.get("eval_every", 0))
                and (_due(step, c.eval_every) or last_step)
            )
            if evaluated:
                em, records = r.evaluate(step, r.state)
                m.update(em)
                _append(wd / EVAL_SAMPLES, step, records, main)
            if _due(step, c.log_every) or last_step or evaluated:
                last = writer.write(step, m)
            if _due(step, c.get("samples_every", 0)):
                _append(wd / SAMPLES, step, samples[: c.get("num_samples_logged", 8)], main)
            limit = c.get("max_nonfinite_in_a_row", 5)
            if bad_in_a_row >= limit:
                # The guard kept the last good state; the checkpoint refuses anything else.
                ckpt.save(step, r.state, extra())
                raise FloatingPointError(
                    f"step {step}: non-finite loss, gradients or updated state in {bad_in_a_row} "
                    "steps in a row (config.max_nonfinite_in_a_row); the last good state is "
                    f"checkpointed in {ckpt.dir}"
                )
            bar.update(1)
            bar.set_postfix({k.split("/")[-1]: f"{m[k]:.3f}" for k in r.postfix if k in m})
            stopping = distributed.any_true(stop.requested)  # every host stops at the same step
            if _due(step, c.ckpt_every) or last_step or stopping:
                ckpt.save(step, r.state, extra())
            if stopping:
                return last
    if r.finish is not None:
        r.finish(r.state)
    return last
