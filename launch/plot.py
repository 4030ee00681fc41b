"""Plot a run's curves from WORKDIR/metrics.jsonl: reward, accuracy, pass@1, completion length.

python launch/plot.py --workdir=/tmp/r1zero --out=curves.png
"""

import argparse
import os

from r1jax.metrics import read_metrics

PANELS = [
    ("reward", ["train/reward"]),
    ("accuracy", ["train/accuracy", "eval/pass@1"]),
    ("completion length (tokens)", ["train/completion_len", "eval/completion_len"]),
]


def plot(workdir: str, out: str, title: str | None = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for ax, (name, keys) in zip(axes, PANELS):
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if key.startswith("eval/") else None, ms=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or os.path.basename(os.path.abspath(workdir)))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", default=None, help="PNG path (default: WORKDIR/curves.png)")
    p.add_argument("--title", default=None)
    a = p.parse_args(argv)
    print(plot(a.workdir, a.out or os.path.join(a.workdir, "curves.png"), a.title))


if __name__ == "__main__":
    main()
