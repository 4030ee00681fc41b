"""The GRPO learner's device passes on packed rows against padded rows, same completions (CPU).

What is timed is what r1jax.stages.grpo.GRPO.step runs after the rollout: the old-policy and
the reference log-probs of every completion (update.make_scorer over objective.frozen_logprobs)
and one update on all of them (update.make_train_step over objective.grpo_loss, loss "grpo",
beta 0.04), each including the host side that builds its device batch (grpo.put_rows: padding,
or packing and unpacking). Padded: one row of P + T tokens per completion, --micro rows per
micro-batch (the config's micro_batch). Packed: rows of P + T tokens (rl.pack_len's default),
micro-batches of the same token budget (rl.micro_tokens = micro x (P + T)).

Completions: B prompts of P random tokens x G samples; lengths forced from a long-tailed
distribution (EOS "injected" at a drawn position): with probability 0.8 uniform in
[1, T/4), else uniform in [T/4, T], so 80% end before a quarter of the limit. Token values do
not change the cost; the same rows feed both layouts. Model: random fp32 weights (D, L, H, K, F,
V below), one CPU device. Each pass is compiled first (not timed), then timed --reps times;
medians.

    python benchmarks/grpo_packing.py            # ~5 minutes on 2 shared cores
    python benchmarks/grpo_packing.py --no-write
"""

# ruff: noqa: E402
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np
import optax

from benchmarks import common
from r1jax import sharding as shd
from r1jax import update
from r1jax.models import get_preset, init_params
from r1jax.rl import experience, losses, objective
from r1jax.stages import grpo

D, L, H, K, F, V = 128, 2, 4, 2, 512, 64
PHASES = ("old_policy", "reference", "update")
LAYOUTS = (("padded", 0), ("packed", -1))  # -1: P + T


def make_rows(B, G, P, T, seed=0):
    """GRPO's training rows (experience.make_rows) with long-tailed completion lengths."""
    rng = np.random.default_rng(seed)
    N = B * G
    short = rng.random(N) < 0.8
    length = np.where(short, rng.integers(1, T // 4, N), rng.integers(T // 4, T + 1, N))
    mask = (np.arange(T)[None] < length[:, None]).astype(np.int32)
    prompts = rng.integers(1, V, (B, P)).astype(np.int32)
    out = {
        "tokens": rng.integers(1, V, (N, T)).astype(np.int32) * mask,
        "mask": mask,
        "logp": -rng.uniform(0.5, 4.0, (N, T)).astype(np.float32) * mask,
    }
    rows = experience.make_rows(prompts, np.ones((B, P), np.int32), out, G)
    rows["adv"] = rng.normal(0, 1, N).astype(np.float32)
    return rows, length


def make_runner(cfg, rows, row_len, micro, P, T):
    """A function running one round of the three passes: ({phase: seconds}, device batch shape
    [micro-batches, rows, row length], update loss, old-policy log-probs)."""
    mesh = shd.make_mesh((("fsdp", 1),))
    kw = dict(cfg=cfg, prompt_len=P, temperature=1.0, vocab_chunk=8192)
    skip = "mask" if row_len else None
    params = init_params(cfg, jax.random.key(0), mesh)
    loss_cfg = losses.LossConfig("grpo", beta=0.04)
    N = len(rows["mask"])
    fns = {}

    def score(p):
        inputs = {k: rows[k] for k in ("tokens", "attn", "mask")}
        batch, sh, index = grpo.put_rows(mesh, inputs, row_len, micro)
        if "score" not in fns:
            fns["score"] = update.make_scorer(
                functools.partial(objective.frozen_logprobs, **kw),
                param_shardings=update.shardings_of(p), batch_shardings=sh, skip_empty=skip,
            )  # fmt: skip
        logp = update.unsplit(fns["score"](p, batch))
        return experience.unpack(logp, index, T) if index else logp, batch

    def train(state, mb):
        batch, sh, _ = grpo.put_rows(mesh, mb, row_len, micro)
        if "train" not in fns:
            fns["train"] = update.make_train_step(
                functools.partial(objective.grpo_loss, loss_cfg=loss_cfg,
                                  policy_loss=losses.policy_loss, **kw),
                optax.sgd(1e-6), state_shardings=update.shardings_of(state),
                batch_shardings=sh, skip_empty=skip,
                prepare=functools.partial(objective.token_weights, loss_type="grpo", max_len=T,
                                          num_sequences=N if row_len else None),
            )  # fmt: skip
        state, m = fns["train"](state, batch)
        return state, float(m["loss"])

    ref = jax.tree.map(np.array, params)  # a frozen copy (the update donates `params`)
    held = {"state": update.init_state(params, optax.sgd(1e-6), mesh)}

    def one_round():
        t0 = time.perf_counter()
        old, batch = score(held["state"]["params"])
        t1 = time.perf_counter()
        ref_logp, _ = score(ref)
        t2 = time.perf_counter()
        mb = {k: rows[k] for k in ("tokens", "attn", "mask", "sampler_logp", "adv")}
        held["state"], loss = train(held["state"], {**mb, "old_logp": old, "ref_logp": ref_logp})
        t3 = time.perf_counter()
        times = dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2)))
        return times, batch["tokens"].shape, loss, old

    return one_round


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--max-new", type=int, default=512)
    ap.add_argument("--micro", type=int, default=8, help="padded rows per micro-batch")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--section", default="GRPO learner: packed vs padded rows")
    a = ap.parse_args()
    B, G, P, T = a.prompts, a.samples, a.prompt_len, a.max_new
    cfg = get_preset(
        "tiny", d_model=D, n_layers=L, n_heads=H, n_kv_heads=K, head_dim=D // H, d_ff=F,
        vocab_size=V, param_dtype="float32", dtype="float32", remat=False,
    )  # fmt: skip
    rows, length = make_rows(B, G, P, T)
    load = os.getloadavg()
    runners = {n: make_runner(cfg, rows, rl % (P + T + 1), a.micro, P, T) for n, rl in LAYOUTS}
    # Rounds alternate between the layouts so that a busy spell of the shared machine does not
    # land on one side only; the first round of each compiles and is dropped.
    times, last = {n: {p: [] for p in PHASES} for n in runners}, {}
    for r in range(a.reps + 1):
        for name, run in runners.items():
            t, *last[name] = run()
            print(name, r, {k: round(v, 3) for k, v in t.items()})
            for p in PHASES:
                times[name][p] += [t[p]] if r else []
    tp, tk = ({p: statistics.median(v) for p, v in times[n].items()} for n in runners)
    (sp, lp, op), (sk, lk, ok) = last["padded"], last["packed"]
    gap = float(np.abs(op - ok).max())
    real = int((P + length).sum())
    rows_tbl = []
    for p in PHASES:
        rows_tbl.append([p, f"{tp[p]:.3f}", f"{tk[p]:.3f}", f"{tp[p] / tk[p]:.2f}x"])
    tot_p, tot_k = sum(tp.values()), sum(tk.values())
    rows_tbl.append(["total", f"{tot_p:.3f}", f"{tot_k:.3f}", f"{tot_p / tot_k:.2f}x"])
    speedup = tot_p / tot_k
    body = (
        f"""
The 2-core VM was shared with other jobs (load average {load[0]:.1f} at the start). The
learner's three device passes of one GRPO step, padded rows (today's layout) against packed
rows (`rl.pack=True`), on the same completions: old-policy log-probs, reference log-probs (both
`update.make_scorer`) and one update (`update.make_train_step`, loss grpo, beta 0.04), each
timed with its host-side batch building (padding, or packing and unpacking). Random fp32 model
D={D}, L={L}, H={H}, K={K}, F={F}, V={V}, one CPU device. B={B} prompts of P={P} tokens x G={G}
samples, max_new_tokens T={T}; completion lengths: with probability 0.8 uniform in [1, T/4),
else uniform in [T/4, T] (drawn: mean {length.mean():.0f}, median {np.median(length):.0f},
{np.mean(length < T // 4):.0%} below T/4). Padded: {sp[0]} micro-batches x {sp[1]} rows x
{sp[2]} tokens. Packed: rows of P + T = {P + T} tokens (first-fit decreasing), the same token
budget per micro-batch ({a.micro} x {P + T} tokens = {sk[1]} rows): {sk[0]} micro-batches
x {sk[1]} rows (the count rounded up to a bucket; empty micro-batches skipped). Real tokens
{real:,} of {sp[0] * sp[1] * sp[2]:,} padded / {sk[0] * sk[1] * sk[2]:,} packed positions.
Medians of {a.reps} timed rounds after one compiling round, the layouts alternating round by
round. Both layouts agree: update loss {lp:.6g} (padded) vs {lk:.6g} (packed), old-policy
log-probs max |diff| {gap:.1e}.

| phase | padded s | packed s | speed-up |
|---|---|---|---|
"""
        + "\n".join(f"| {' | '.join(r)} |" for r in rows_tbl)
        + f"""

Target >= 2x for update + old-policy + reference: {speedup:.2f}x, {
            "met" if speedup >= 2 else "NOT met"
        }.
"""
    )
    print(body)
    if not a.no_write:
        common.write_section(a.section, body)


if __name__ == "__main__":
    main()
