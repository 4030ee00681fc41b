"""Full-sequence forward speed on CPU: tokens/s, model FLOP/s against the matmul peak, and
compile time, plus how compile time scales with depth (layers run under lax.scan).

The timed function is what the trainer runs to score sequences: `forward` and then
`token_logprobs` of the next tokens (the LM head included, in vocabulary chunks). Parameters
are random, fp32. Writes the section "Forward" of benchmarks/RESULTS.md.

    python benchmarks/forward.py            # tiny and qwen2.5-0.5b shapes (~2 minutes)
    python benchmarks/forward.py --quick    # tiny only, and the depth scaling
"""

# The repository root goes on sys.path before the imports below.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp

from benchmarks import common
from r1jax.models import abstract_params, forward, get_preset, init_params, token_logprobs


def score_fn(cfg):
    def score(params, tokens_NT):
        n, t = tokens_NT.shape
        positions = jnp.broadcast_to(jnp.arange(t), (n, t))
        h = forward(params, tokens_NT, positions, jnp.ones((n, t), jnp.int32), cfg)
        return token_logprobs(params, h[:, :-1], tokens_NT[:, 1:], cfg)[0]

    return jax.jit(score)


def compile_seconds(cfg, n: int, t: int) -> tuple[float, float]:
    """(trace + lower, compile) seconds, from abstract shapes: nothing is allocated."""
    tokens = jax.ShapeDtypeStruct((n, t), jnp.int32)
    t0 = time.perf_counter()
    lowered = score_fn(cfg).lower(abstract_params(cfg), tokens)
    t1 = time.perf_counter()
    lowered.compile()
    return t1 - t0, time.perf_counter() - t1


def bench_model(name: str, cfg, n: int, t: int, repeats: int) -> dict:
    params = init_params(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (n, t), 0, cfg.vocab_size, jnp.int32)
    t0 = time.perf_counter()
    lowered = score_fn(cfg).lower(params, tokens)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    first = common.timed_first_call(lambda: compiled(params, tokens))
    steady = common.timeit(lambda: compiled(params, tokens), warmup=0, repeats=repeats)["median"]
    # Scored tokens: t - 1 per row; each attends on average to (t + 1) / 2 positions.
    flops = n * (t - 1) * common.flops_per_token(cfg, (t + 1) / 2)
    out = dict(name=name, shape=f"{n} x {t}", lower=t1 - t0, compile=t2 - t1, first=first,
               steady=steady, tps=n * (t - 1) / steady, gflops=flops / steady / 1e9)  # fmt: skip
    print(out)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny preset only")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    args = ap.parse_args()

    peaks = [common.matmul_peak()]
    print("matmul peak", peaks[-1])
    runs = [bench_model("tiny", get_preset("tiny"), 16, 256, 5)]
    if not args.quick:
        runs.append(bench_model("qwen2.5-0.5b (random)", get_preset("qwen2.5-0.5b"), 8, 128, 3))
    peaks.append(common.matmul_peak())  # again at the end: the higher one is the peak
    print("matmul peak", peaks[-1])
    peak = max(peaks, key=lambda p: p["jax"])
    rows = [[r["name"], r["shape"], r["lower"], r["compile"], r["first"], r["steady"], r["tps"],
             r["gflops"], r["gflops"] / peak["jax"]] for r in runs]  # fmt: skip

    base = get_preset("qwen2.5-0.5b")
    compile_seconds(base.replace(n_layers=3), 8, 128)  # warm JAX's own caches first
    depth = []
    for layers in (2, 24):
        lower_s, compile_s = compile_seconds(base.replace(n_layers=layers), 8, 128)
        depth.append([layers, lower_s, compile_s])
        print(depth[-1])
    ratio = (depth[1][1] + depth[1][2]) / (depth[0][1] + depth[0][2])

    header = ["model", "batch x length", "trace+lower s", "compile s", "first run s",
              "steady s (median)", "tokens/s", "model GFLOP/s", "fraction of peak"]  # fmt: skip
    body = f"""
Scoring pass (`forward` + chunked `token_logprobs`), random fp32 weights, one jit, CPU.
Matmul peak measured in the same run (fp32 {peak["n"]}^3 matmul, best of 7, the higher of a
measurement before and after): jax {peak["jax"]:.0f} GFLOP/s, torch
{peak.get("torch", float("nan")):.0f} GFLOP/s. "first run" is the first execution after compile.
Model FLOPs per scored token = 2 * matmul params + 4 * L * H * Dh * (T + 1) / 2.

{common.table(header, rows)}

Compile time against depth (qwen2.5-0.5b width, 8 x 128, layers under `lax.scan`):

{common.table(["layers", "trace+lower s", "compile s"], depth)}

24 / 2 layers (trace+lower+compile): **{ratio:.2f}x** (target <= 1.5x:
{"met" if ratio <= 1.5 else "NOT met"}).
"""
    print(body)
    if not args.no_write:
        common.write_section("Forward", body)


if __name__ == "__main__":
    main()
