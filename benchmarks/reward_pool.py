"""Reward pool costs: worker start-up, one embedded-default step's rewards, a hung item.

    python benchmarks/reward_pool.py [--repeats 5] [--section NAME]

The embedded default (configs/r1zero.py) scores 16 prompts x 8 samples = 128 completions per step
with math + format. Rule rewards used to run in the trainer's process there (workers=0); now they
always run in worker processes (workers=0 = auto). This times one step's rewards both ways on
sumchain-style completions like the embedded model's (half correct), the pool's first call
(start-up: interpreter, imports, building the preloaded rewards), and a power-tower answer that
hangs sympy (killed after timeout_s, then the replacement serves the next item).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402  (imports JAX: workers start from a JAX process)
from r1jax.rewards import RewardPool, RewardStack  # noqa: E402
from r1jax.rewards.pool import auto_workers  # noqa: E402

SPECS = [("math", 1.0), ("format", 1.0)]  # the embedded default's rewards
TOWER = r"<think> x </think> <answer> \boxed{9^{9^{9^{9^{9}}}}} </answer>"


def step_items(n: int = 128, seed: int = 0):
    rng = random.Random(seed)
    prompts, completions, answers = [], [], []
    for _ in range(n):
        terms = [rng.randint(10, 30) for _ in range(5)]
        steps, acc = [], terms[0]
        for t in terms[1:]:
            steps.append(f"{acc} + {t} = {acc + t}.")
            acc += t
        said = acc if rng.random() < 0.5 else acc + rng.randint(1, 9)
        prompts.append("User: Compute " + " + ".join(map(str, terms)) + ". Assistant:")
        completions.append(f" <think> {' '.join(steps)} </think> <answer> {said} </answer>")
        answers.append(str(acc))
    return prompts, completions, {"answer": answers}


def time_steps(pool: RewardPool, repeats: int) -> tuple[float, float, float]:
    """(first call s, median s, best s) of one step's rewards through `pool`."""
    stack = RewardStack(SPECS, pool=pool)
    ts = []
    for seed in range(repeats + 1):  # new completions each step: nothing is cached
        items = step_items(seed=seed)
        t0 = time.perf_counter()
        res = stack(*items)
        ts.append(time.perf_counter() - t0)
        assert res.counters["timeouts"] + res.counters["exceptions"] == 0
    return ts[0], statistics.median(ts[1:]), min(ts[1:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--section", default="Reward pool: start-up, embedded step, hung item")
    args = ap.parse_args()
    rows = []
    with RewardPool(in_process={"math", "format"}) as pool:  # the old workers=0 path
        rows.append(["in the trainer's process (before)", "-", *time_steps(pool, args.repeats)])
    with RewardPool(0) as pool:
        rows.append([f"worker processes (now, auto = {pool.workers})", pool.workers,
                     *time_steps(pool, args.repeats)])  # fmt: skip
    for r in rows:
        print(r)

    boot = []
    for preload in ([], [("math", {})]):
        with RewardPool(1) as pool:
            pool.preload(preload)
            t0 = time.perf_counter()
            pool.map("format", [""], ["x"])
            boot.append(time.perf_counter() - t0)
    with RewardPool(1, timeout_s=1.0) as pool:
        stack = RewardStack(SPECS[:1], pool=pool)
        stack(["p"], [r"\boxed{2}"], answer=["2"])  # started and warm
        t0 = time.perf_counter()
        hung = stack(["p"], [TOWER], answer=["2"])
        hung_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        after = stack(["p"], [r"\boxed{3}"], answer=["3"])
        next_s = time.perf_counter() - t0
        assert hung.counters["timeouts"] == 1 and after.total.tolist() == [1.0]
    print(boot, hung_s, next_s)

    body = f"""Rewards of one step of the embedded default (`configs/r1zero.py`: 16 prompts x 8
samples = 128 completions, math + format), sumchain-style completions, half correct; first
call, then median / best of {args.repeats} calls. auto_workers() here = {auto_workers()}.

{common.table(["rule rewards run", "workers", "first call s", "median s", "best s"], rows)}

Worker start-up (one worker, first item = format): {boot[0]:.2f} s without preload,
{boot[1]:.2f} s when it first builds the math reward (imports sympy and math-verify).
A power tower `\\boxed{{9^{{9^{{9^{{9^{{9}}}}}}}}}}` against gold 2 with timeout_s = 1 (one warm
worker): the call returned after {hung_s:.2f} s with 0 (timeout counted); the next item, served
by the replacement worker (fresh interpreter, rewards preloaded), took {next_s:.2f} s.
"""
    common.write_section(args.section, body)


if __name__ == "__main__":
    main()
