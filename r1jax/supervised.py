"""The loop shared by the supervised trainers: SFT (and pretraining), logit distillation, and
reward-model training. Each trainer builds its rows, model and jitted step; `fit` runs them.

It owns what must be the same everywhere: a resumable shuffled data order, orbax checkpoints
with the iterator position and the config (a resumed run with a different config is refused),
metrics.jsonl + TensorBoard, a progress bar, periodic evaluation, and a clean SIGTERM stop.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import jax
import numpy as np

from r1jax import runtime
from r1jax.config_checks import check_resume
from r1jax.data import DataIterator
from r1jax.metrics import MetricsWriter, progress, truncate_metrics
from r1jax.train_state import Checkpointer, StopSignal


def pad_rows(rows: dict[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
    """Appends all-zero rows (no targets) so the row count is a multiple of `multiple`."""
    pad = -len(next(iter(rows.values()))) % multiple
    return {k: np.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1)) for k, v in rows.items()}


def fit(
    config,
    workdir: str,
    mesh,
    state,
    rows: dict[str, np.ndarray],
    schedule,
    *,
    name: str,
    make_step: Callable,
    evaluate: Callable | None = None,
    step_args=(),
    batch: int,
    micro: int,
    postfix=("loss",),
    first_metrics=None,
) -> tuple[dict, bool]:
    """Trains `state` for config.steps steps of `batch` rows (shuffled, epoch after epoch).

    make_step(state_shardings, batch_shardings) -> jitted fn(state, *step_args, batch) returning
    (state, metrics). evaluate(params) -> {"eval/...": value}. Returns (state, finished).
    """
    n = len(next(iter(rows.values())))
    it = DataIterator([{"i": i} for i in range(n)], batch, seed=config.seed)
    ckpt = Checkpointer(workdir)
    config_json = json.loads(config.to_json_best_effort())
    start = 0
    if ckpt.latest_step() is not None:
        start = ckpt.latest_step()
        state, extra = ckpt.restore(start, state)
        check_resume(extra.get("config", {}), config_json)
        it.set_state(extra["data"])
        truncate_metrics(workdir, start)
    shapes = {k: np.zeros((batch,) + v.shape[1:], v.dtype) for k, v in rows.items()}
    example = runtime.micro_split(shapes, micro)
    step_fn = make_step(runtime.shardings_of(state), runtime.batch_shardings(mesh, example))
    writer = MetricsWriter(workdir)
    if start == 0 and evaluate is not None:
        writer.write(0, {**evaluate(state["params"]), **(first_metrics or {})})
    bar = progress(config.steps, start, name)
    step = start
    try:
        with StopSignal() as stop:
            for step in range(start + 1, config.steps + 1):
                idx = [b["i"] for b in next(it)]
                host = runtime.micro_split({k: v[idx] for k, v in rows.items()}, micro)
                state, m = step_fn(state, *step_args, runtime.put_batch(mesh, host)[0])
                bar.update(1)
                if step % config.log_every == 0 or step == config.steps:
                    m = {f"train/{k}": float(v) for k, v in jax.device_get(m).items()}
                    m["train/lr"] = float(schedule(max(int(state["step"]) - 1, 0)))
                    if evaluate is not None:
                        m.update(evaluate(state["params"]))
                    writer.write(step, m)
                    bar.set_postfix({k: f"{m[f'train/{k}']:.3f}" for k in postfix})
                if step % config.ckpt_every == 0 or step == config.steps or stop.requested:
                    ckpt.save(step, state, {"data": it.get_state(), "config": config_json})
                if stop.requested:
                    break
    finally:
        ckpt.close()
        bar.close()
        writer.close()
    return state, step >= config.steps
