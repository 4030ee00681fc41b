"""A run's curves from WORKDIR/metrics.jsonl, as one PNG: reward, accuracy with held-out pass@1,
completion length, and the reward components.

  python launch/plot.py --workdir=/tmp/r1zero            # writes /tmp/r1zero/curves.png
  r1jax-plot --workdir=/tmp/r1zero --out=curves.png --smooth=15
  python launch/plot.py --workdir=/tmp/a --also=/tmp/b,/tmp/c   # -> /tmp/a/compare.png

Training series are noisy (one rollout per point), so each is drawn twice: the raw points as a
faint line and a centred moving average over `smooth` logged points as a solid line (centred,
not an EMA, so the smoothed curve does not lag behind a rising one; the window shrinks to the
points that exist near the ends). Held-out evaluations (eval/pass@1, eval/completion_len) are
already averages over many samples: drawn as they are, with markers.

`--also` compares runs instead: one panel per `--keys` metric, one line per run (named by its
directory), as logged (no smoothing: short runs are read point by point), eval/* with markers; a
panel whose values span more than two decades (a log-prob gap, fp32 beside bf16) is drawn on a
log axis.

`figure(rows)` returns the matplotlib Figure (no pyplot: no global state, any backend);
lines carry gids "raw:KEY", "smoothed:KEY" and "eval:KEY" for whoever inspects it.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags
from matplotlib.figure import Figure

from r1jax.metrics import read_metrics

SMOOTH = 9  # default window of the moving average, in logged points

# (title, y-axis label, training keys (smoothed), held-out keys (markers))
PANELS = (
    ("reward", "reward per completion (weighted sum)", ("train/reward",), ()),
    ("accuracy", "fraction correct", ("train/accuracy",), ("eval/pass@1",)),
    ("completion length", "tokens", ("train/completion_len",), ("eval/completion_len",)),
)
COMPONENTS = ("reward components", "reward per completion (unweighted)")
COMPARE_KEYS = ("train/reward", "train/accuracy", "eval/pass@1", "train/sampler_logp_gap")


def moving_average(values, window: int) -> np.ndarray:
    """Centred moving average: point i is the mean of the points within window // 2 of it on
    either side (fewer near the ends). window=1 returns the values."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"smooth={window}: the centred window must be odd and >= 1 (1: none)")
    y = np.asarray(values, np.float64)
    h, idx = window // 2, np.arange(len(y))
    lo, hi = np.maximum(idx - h, 0), np.minimum(idx + h + 1, len(y))
    csum = np.concatenate([[0.0], np.cumsum(y)])
    return (csum[hi] - csum[lo]) / (hi - lo)


def series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows that logged `key` (nulls, i.e. non-finite values, dropped)."""
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    steps, values = zip(*pts) if pts else ((), ())
    return np.asarray(steps, np.float64), np.asarray(values, np.float64)


def component_keys(rows: list[dict]) -> list[str]:
    """Every rewards/<label> key logged (rewards/count/* are counters, not rewards)."""
    keys = {k for r in rows for k in r if k.startswith("rewards/")}
    return sorted(k for k in keys if not k.startswith("rewards/count/"))


def _smoothed(ax, rows, key, label, color, window):
    x, y = series(rows, key)
    if len(x):
        ax.plot(x, y, color=color, lw=0.8, alpha=0.3, gid=f"raw:{key}", label=f"_{label} raw")
        ax.plot(
            x, moving_average(y, window), color=color, lw=1.8, gid=f"smoothed:{key}", label=label
        )
    return len(x)


def figure(rows: list[dict], title: str | None = None, smooth: int = SMOOTH) -> Figure:
    """The 2 x 2 figure of these metrics rows (dicts with "step"; r1jax.metrics.read_metrics)."""
    moving_average([], smooth)  # a bad window fails before anything is drawn
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    panels = [*PANELS, (*COMPONENTS, tuple(component_keys(rows)), ())]
    for ax, (name, ylabel, train, held_out) in zip(axes, panels):
        drawn = 0
        for i, key in enumerate(train):
            label = key.removeprefix("rewards/") if name == COMPONENTS[0] else key
            drawn += _smoothed(ax, rows, key, label, f"C{i}", smooth)
        for i, key in enumerate(held_out, start=len(train)):
            x, y = series(rows, key)
            if len(x):
                ax.plot(x, y, color=f"C{i}", marker="o", ms=4, lw=1.2, gid=f"eval:{key}", label=key)
            drawn += len(x)
        ax.set(title=name, xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    note = f"faint: raw; solid: centred moving average over {smooth} logged points"
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize=10)
    return fig


def compare_figure(runs: dict[str, list[dict]], keys=COMPARE_KEYS, title=None) -> Figure:
    """Runs (name -> metrics rows) side by side: one panel per key, one line per run."""
    n_rows = (len(keys) + 1) // 2
    fig = Figure(figsize=(10, 3.5 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, 2, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        values = []
        for i, (name, rows) in enumerate(runs.items()):
            x, y = series(rows, key)
            if len(x):
                marker = "o" if key.startswith("eval/") else "."
                style = dict(color=f"C{i}", marker=marker, ms=4, lw=1.2)
                ax.plot(x, y, **style, gid=f"{name}:{key}", label=name)
                values.append(y)
        y = np.concatenate(values) if values else np.zeros(0)
        if len(y) and (y > 0).all() and y.max() > 100 * y.min():
            ax.set_yscale("log")
        ax.set(title=key, xlabel="step")
        ax.grid(alpha=0.3)
        if values:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    for ax in axes[len(keys) :]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_runs(workdirs, out, keys=COMPARE_KEYS, title: str | None = None) -> str:
    """Draws the runs' `keys` into the PNG `out` (compare_figure); returns `out`."""
    runs = {os.path.basename(os.path.abspath(str(w))): read_metrics(w) for w in workdirs}
    empty = [name for name, rows in runs.items() if not rows]
    if empty:
        raise ValueError(f"{empty}: metrics.jsonl has no rows to plot")
    compare_figure(runs, tuple(keys), title).savefig(out, dpi=100)
    return str(out)


def plot(workdir, out, title: str | None = None, smooth: int = SMOOTH) -> str:
    """Draws WORKDIR/metrics.jsonl into the PNG `out`; returns `out`."""
    rows = read_metrics(workdir)
    if not rows:
        raise ValueError(f"{workdir}: metrics.jsonl has no rows to plot")
    name = title or os.path.basename(os.path.abspath(str(workdir)))
    figure(rows, name, smooth).savefig(out, dpi=100)
    return str(out)


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "run directory holding metrics.jsonl", flag_values=fv)
    flags.DEFINE_string("out", None, "PNG path (default: WORKDIR/curves.png)", flag_values=fv)
    flags.DEFINE_integer("smooth", SMOOTH, "odd moving-average window (1: none)", flag_values=fv)
    flags.DEFINE_string("title", None, "figure title (default: the workdir's name)", flag_values=fv)
    flags.DEFINE_list("also", [], "more run directories: compare runs key by key", flag_values=fv)
    flags.DEFINE_list("keys", list(COMPARE_KEYS), "the metrics --also compares", flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)
    flags.register_validator(
        "smooth", lambda w: w >= 1 and w % 2 == 1, "--smooth: an odd window >= 1", flag_values=fv
    )


def plot_from_flags(fv: flags.FlagValues) -> str:
    if fv.also:
        out = fv.out or os.path.join(fv.workdir, "compare.png")
        return plot_runs([fv.workdir, *fv.also], out, fv.keys, fv.title)
    out = fv.out or os.path.join(fv.workdir, "curves.png")
    return plot(fv.workdir, out, fv.title, fv.smooth)


def main(argv: list[str] | None = None) -> None:
    """The command line (launch/plot.py; console script `r1jax-plot = r1jax.plotting:main`)."""
    define_flags(flags.FLAGS)
    app.run(lambda _: print(plot_from_flags(flags.FLAGS)), argv)
