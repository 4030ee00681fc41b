"""Run outputs a person reads: metrics.jsonl, TensorBoard events, a console progress bar.

`metrics.jsonl` holds one JSON object per logged step, keys like "train/reward" (documented in
the README). Non-finite values are written as null so the file stays valid JSON.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np


def _clean(v):
    v = float(np.asarray(v))
    return v if math.isfinite(v) else None


class MetricsWriter:
    """Appends to WORKDIR/metrics.jsonl and TensorBoard; keeps the last values for the bar."""

    def __init__(self, workdir: str, tensorboard: bool = True):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:  # optional: metrics.jsonl is the record
                self._tb = None

    def write(self, step: int, metrics: dict) -> dict:
        row = {"step": int(step), **{k: _clean(v) for k, v in sorted(metrics.items())}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and v is not None:
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()
        return row

    def close(self):
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir_or_file: str) -> list[dict]:
    path = workdir_or_file
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(workdir: str, after_step: int) -> None:
    """On resume, drop rows logged after the checkpoint we restart from (they will be redone)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    rows = [r for r in read_metrics(path) if r["step"] <= after_step]
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(path + ".tmp", path)


def progress(total: int, initial: int = 0, desc: str = "train"):
    """A tqdm bar with rate and ETA (plain text when not attached to a terminal)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
        unit="step",
    )


class Timer:
    """`with timer("rollout"):` accumulates wall-clock seconds per phase."""

    def __init__(self):
        self.times: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.times[name] = timer.times.get(name, 0.0) + time.perf_counter() - self.t0

        return _Ctx()

    def pop(self) -> dict[str, float]:
        out, self.times = self.times, {}
        return out
