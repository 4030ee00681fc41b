"""Plot a run's curves from WORKDIR/metrics.jsonl (the logic is r1jax.plotting): reward, accuracy
with held-out pass@1, completion length and the reward components; training series drawn raw
(faint) and as a centred moving average over --smooth logged points (solid).

  python launch/plot.py --workdir=/tmp/r1zero                # -> /tmp/r1zero/curves.png
  python launch/plot.py --workdir=/tmp/r1zero --out=curves.png --smooth=15 --title="lr 3e-4"
  python launch/plot.py --workdir=/tmp/a --also=/tmp/b --keys=train/reward,eval/pass@1

Flags: --workdir (required), --out (default WORKDIR/curves.png), --smooth (odd, 1: none),
--title; --also (more runs: one panel per --keys metric, one line per run, -> WORKDIR/compare.png
by default). The same command is the console script `r1jax-plot` (r1jax.plotting:main).
"""

from absl import app, flags

from r1jax import plotting

if __name__ == "__main__":
    plotting.define_flags(flags.FLAGS)
    app.run(lambda argv: print(plotting.plot_from_flags(flags.FLAGS)))
