"""Run outputs a person reads: metrics.jsonl, TensorBoard events, a console progress bar.

`metrics.jsonl` holds one JSON object per logged step, keys like "train/reward" (documented in
the README); TensorBoard tags are exactly those keys ("eval/pass@1", unmangled). Non-finite values
are written as null so the file stays valid JSON. Only process 0 writes (multi-host runs log
global values, reduced across hosts by the stages).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from tensorboardX import SummaryWriter
from tensorboardX.proto.summary_pb2 import Summary
from tqdm import tqdm

from r1jax import distributed, files


def _clean(v):
    v = float(np.asarray(v))
    return v if math.isfinite(v) else None


class MetricsWriter:
    """Appends to WORKDIR/metrics.jsonl and TensorBoard events (process 0; a no-op elsewhere)."""

    def __init__(self, workdir, tensorboard: bool = True):
        self.path = files.path(workdir) / "metrics.jsonl"
        self.active = distributed.is_main()
        self._tb = None
        if self.active and tensorboard:
            self._tb = SummaryWriter(str(files.path(workdir) / "tensorboard"))

    def write(self, step: int, metrics: dict) -> dict:
        row = {"step": int(step), **{k: _clean(v) for k, v in sorted(metrics.items())}}
        if not self.active:
            return row
        files.append_jsonl(self.path, [row])
        if self._tb is not None:
            # Written as protos so that tags keep their characters (SummaryWriter.add_scalar
            # would turn "eval/pass@1" into "eval/pass_1").
            values = [
                Summary.Value(tag=k, simple_value=v)
                for k, v in row.items()
                if k != "step" and v is not None
            ]
            self._tb._get_file_writer().add_summary(Summary(value=values), int(step))
            self._tb.flush()
        return row

    def close(self):
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir_or_file) -> list[dict]:
    p = files.path(workdir_or_file)
    return files.read_jsonl(p / "metrics.jsonl" if p.is_dir() else p)


def truncate_after(path, step: int) -> None:
    """On resume, drop rows logged after the step we restart from (they will be redone)."""
    p = files.path(path)
    if distributed.is_main() and p.exists():
        files.write_jsonl(p, [r for r in files.read_jsonl(p) if r["step"] <= step])


def progress(total: int, initial: int = 0, desc: str = "train"):
    """A tqdm bar with rate and ETA on process 0 (plain text when not on a terminal)."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
        unit="step",
        disable=not distributed.is_main(),
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
