"""Run a config's sweep: one training run per `add(...)` call of its `sweep(add)` function.

  python launch/sweep.py --config=configs/r1zero.py --workdir=/tmp/sweep [--dry_run]

Each run gets WORKDIR/<index>-<overrides> and the --config.KEY=VALUE overrides of its point. On
a cluster, hand the printed commands (--dry_run) to your scheduler: each is independent.
"""

from r1jax import tools

if __name__ == "__main__":
    tools.sweep()
