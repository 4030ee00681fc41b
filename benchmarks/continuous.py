"""Useful generated tokens per second: the continuous (slot-refill) decoder against the static
(lockstep) decoder, on the same rows with the same long-tailed lengths.

A random `tiny`-shaped model (vocabulary 4,096) samples B prompts x G completions at
temperature 1. Both sides get the same per-row forced lengths (`end_at`: EOS injected at that
position, see sampling.draw_step), drawn once: 80% of rows uniform in [1, T/4], 20% uniform in
(T/4, T]. A row can also end earlier on its own (the model draws the EOS id, ~1/4096 per step);
the completions of both sides are the same up to float rounding (rows compared in the table).
Useful tokens = the sum of a side's completion lengths (no padding after a row's end).

Per phase: prefill (the prompts' forward and first logits, `sampling.prefill`, timed alone)
and decode (the rest of the call). "row-steps" counts the rows x steps each side computes (from
the lengths: the static side runs every row until the longest has ended, in whole chunks; the
continuous side runs `slots` rows until its last row has ended), against the useful tokens.

    python benchmarks/continuous.py               # ~5 minutes on 2 cores

--prefill-group g adds a side with the first slot count whose prompts are prefilled g at a time
inside the decode loop (sampling.prefill_group; its prefill is inside its decode time).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

# The repository root goes on sys.path before the imports below.
# ruff: noqa: E402
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

from benchmarks import common
from r1jax import continuous, sampling
from r1jax.models import get_preset, init_params
from r1jax.models import transformer as tfm


def forced_lengths(n: int, T: int, seed: int = 0) -> np.ndarray:
    """80% of rows in [1, T/4], 20% in (T/4, T], uniform within each."""
    rng = np.random.default_rng(seed)
    short = rng.integers(1, T // 4 + 1, n)
    long = rng.integers(T // 4 + 1, T + 1, n)
    return np.where(rng.random(n) < 0.8, short, long).astype(np.int32)


def static_row_steps(lengths, T: int, chunk: int) -> int:
    return len(lengths) * min(-(-int(lengths.max()) // chunk) * chunk, -(-T // chunk) * chunk)


def continuous_row_steps(lengths, slots: int, chunk: int) -> int:
    """Slots x steps of the continuous loop: a slot takes the next row the step its row ends."""
    free_at = np.zeros(slots, np.int64)  # the step at which each slot is free
    for n in lengths:
        i = int(free_at.argmin())
        free_at[i] += n
    return slots * -(-int(free_at.max()) // chunk) * chunk


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16, help="B")
    ap.add_argument("--samples", type=int, default=8, help="G")
    ap.add_argument("--new", type=int, default=512, help="T, max_new_tokens")
    ap.add_argument("--slots", default="16,32,64", help="slot counts of the continuous side")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per side (best is used)")
    ap.add_argument("--unroll-decode", action="store_true", help="ModelConfig.unroll_decode")
    ap.add_argument(
        "--prefill-group",
        type=int,
        default=0,
        help="also run the first slot count with prompts prefilled this many at a time inside "
        "the decode loop (sampling.prefill_group)",
    )
    ap.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    ap.add_argument("--section", default="Continuous vs static sampler")
    args = ap.parse_args()
    B, G, T = args.prompts, args.samples, args.new
    N = B * G
    cfg = get_preset("tiny", vocab_size=4096, unroll_decode=args.unroll_decode)
    params = init_params(cfg, jax.random.key(0))
    rng = np.random.default_rng(1)
    ids = [rng.integers(1, cfg.vocab_size, rng.integers(16, 65)).tolist() for _ in range(B)]
    tokens, mask = sampling.pad_prompts(ids, 0)
    end_at = forced_lengths(N, T)
    s = sampling.SamplingConfig(max_new_tokens=T, temperature=1.0, chunk=32, eos_ids=(1,))
    sides = {"static": (sampling.generate, s)}
    for k in map(int, args.slots.split(",")):
        sides[f"continuous, {k} slots"] = (continuous.generate, dataclasses.replace(s, slots=k))
    if args.prefill_group:
        k, g = int(args.slots.split(",")[0]), args.prefill_group
        sc = dataclasses.replace(s, slots=k, prefill_group=g)
        sides[f"continuous, {k} slots, prefill group {g}"] = (continuous.generate, sc)

    @jax.jit
    def prefill(params, tokens, mask):
        h, prefix = sampling.prefill(params, tokens, mask, cfg, s)
        return tfm.logits_from_hidden(params, h, cfg), prefix

    t_prefill = common.timeit(lambda: prefill(params, tokens, mask), warmup=1, repeats=5)["min"]

    runs, compile_s, outs = {}, {}, {}
    for name, (fn, sc) in sides.items():
        t0 = time.perf_counter()
        run = fn.lower(params, tokens, mask, jax.random.key(0), end_at, cfg=cfg, s=sc,
                       group_size=G).compile()  # fmt: skip
        compile_s[name] = time.perf_counter() - t0
        runs[name] = run
        outs[name] = jax.device_get(run(params, tokens, mask, jax.random.key(0), end_at))
    ref = outs["static"]
    # Rows identical to the static side's: all but those where float rounding of the logits
    # (other batch shapes, cache lengths) moved a draw across a token boundary (~1e-3 of draws
    # of this near-uniform random model).
    same = {k: int((o["tokens"] == ref["tokens"]).all(1).sum()) for k, o in outs.items()}
    lengths = ref["length"]
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.repeats):  # alternating, so that a change of load hits every side
        for name, run in runs.items():
            t = common.timeit(lambda r=run: r(params, tokens, mask, jax.random.key(0), end_at),
                              warmup=0, repeats=1)["min"]  # fmt: skip
            times[name].append(t)
            print(f"{name}: {t:.2f}s", flush=True)

    rows, rate = [], {}
    for name in sides:
        best = min(times[name])
        steps = (static_row_steps(lengths, T, s.chunk) if name == "static"
                 else continuous_row_steps(lengths, sides[name][1].slots, s.chunk))  # fmt: skip
        useful = int(outs[name]["length"].sum())
        rate[name] = useful / best
        rows.append([name, f"{same[name]}/{N}", useful, compile_s[name],
                     float(np.median(times[name])), best, t_prefill, best - t_prefill, steps,
                     useful / steps, rate[name],
                     f"{rate[name] / rate['static']:.2f}x"])  # fmt: skip
    header = ["side", "rows = static", "useful tokens", "compile s", "median s", "best s",
              "prefill s", "decode s", "row-steps", "useful / row-steps", "useful tokens/s",
              "vs static"]  # fmt: skip
    ratio = max(rate[k] / rate["static"] for k in sides if k != "static")
    q = np.percentile(lengths, [25, 50, 75, 90, 100])
    body = f"""
`python benchmarks/continuous.py`: {B} prompts x {G} samples, max_new_tokens {T}, random
`tiny` model (d 256, 4 layers, vocabulary 4,096, fp32, KV fp32, unroll_decode
{cfg.unroll_decode}), temperature 1, chunk
{s.chunk}, prompts 16-64 tokens (padded {tokens.shape[1]}). Forced lengths: 80% of rows
uniform in [1, {T // 4}], 20% uniform in ({T // 4}, {T}] (EOS injected, the same rows on both
sides). Realised lengths (static side): mean {lengths.mean():.0f}, quartiles
{q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f}, 90th percentile {q[3]:.0f}, max {q[4]:.0f};
{(lengths < T / 4).mean():.0%} end before T/4. Best of
{args.repeats} runs per side, alternating; prefill timed alone (same for every side), decode =
best - prefill.

{common.table(header, rows)}

Best continuous / static useful tokens per second: **{ratio:.2f}x** (target >= 2x:
{"met" if ratio >= 2 else "NOT met"}).
"""
    print(body)
    if not args.no_write:
        common.write_section(args.section, body)


if __name__ == "__main__":
    main()
