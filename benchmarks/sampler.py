"""Per-step cost of the sampler's token draw (`sampling._pick`) on CPU, by vocabulary size.

One decode step draws a token for each of N rows from [N, V] logits: temperature, optional
top-k / top-p truncation, the draw, and the log-prob under the full distribution. For a 150k
vocabulary this is as much work as the LM head itself unless done with care. "peaked" logits
(N(0, 6^2)) put the top-p nucleus within a few hundred tokens, as a trained model does; "flat"
logits (N(0, 1)) spread it over most of the vocabulary, as a random model does. Writes the
section "Sampler draw" of benchmarks/RESULTS.md.

    python benchmarks/sampler.py                            # ~1 minute
    python benchmarks/sampler.py --r1jax-from /tmp/base     # time another checkout's r1jax
"""

from __future__ import annotations

import argparse
import os
import sys

# The repository root (or --r1jax-from) goes on sys.path before the imports below.
# ruff: noqa: E402
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if "--r1jax-from" in sys.argv:
    sys.path.insert(0, os.path.abspath(sys.argv[sys.argv.index("--r1jax-from") + 1]))

import jax

from benchmarks import common
from r1jax import sampling

CASES = [  # (vocabulary, logit scale, top_p)
    (256, 1.0, 1.0),
    (256, 1.0, 0.95),
    (151_936, 1.0, 1.0),
    (151_936, 6.0, 0.95),
    (151_936, 1.0, 0.95),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=128, help="N, rows drawn per step")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    ap.add_argument("--r1jax-from", metavar="DIR", help="import r1jax from DIR/r1jax instead")
    ap.add_argument("--section", default="Sampler draw", help="section of RESULTS.md")
    args = ap.parse_args()
    print("r1jax from", os.path.dirname(sampling.__file__))

    rows = []
    for vocab, scale, top_p in CASES:
        logits = scale * jax.random.normal(jax.random.key(0), (args.rows, vocab))
        s = sampling.SamplingConfig(temperature=1.0, top_p=top_p)
        if hasattr(sampling, "row_keys"):  # per-row keys: _pick takes one key per row
            pick = jax.jit(lambda k, x, s=s: sampling._pick(jax.random.split(k, len(x)), x, s))
        else:  # an older checkout (--r1jax-from): one key for all rows
            pick = jax.jit(lambda key, x, s=s: sampling._pick(key, x, s))
        t = common.timeit(lambda p=pick, x=logits: p(jax.random.key(1), x), warmup=1, repeats=5)
        shape = "peaked" if scale > 1 else "flat"
        rows.append([f"{args.rows} x {vocab:,}", shape, top_p, t["median"] * 1e3])
        print(rows[-1], flush=True)

    body = f"""
Median of 5 jitted calls of `sampling._pick` (temperature 1) on [N, V] fp32 logits; r1jax from
{f"`{args.r1jax_from}`" if args.r1jax_from else "this checkout"}.

{common.table(["N x V", "logits", "top_p", "ms per step"], rows)}
"""
    print(body)
    if not args.no_write:
        common.write_section(args.section, body)


if __name__ == "__main__":
    main()
