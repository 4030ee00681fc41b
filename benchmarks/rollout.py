"""Rollout speed on CPU: r1jax's group sampler against transformers' `generate`, same weights.

For each model shape a random transformers Qwen2 model is created, saved with save_pretrained
and loaded into r1jax with `load_hf`, so both sides sample from identical fp32 weights. B
prompts of random lengths are left-padded to one bucket; each side draws G samples per prompt
of exactly `--new` tokens (EOS switched off on both sides: no eos ids on ours,
`eos_token_id=None` on theirs), temperature 1, no top-k/top-p. Also times math verifications
through the reward worker pool. Writes the section "Rollout" of benchmarks/RESULTS.md.

Model FLOPs per generated token = 2 * matmul params + 4 * L * H * Dh * c, where c is the number
of positions the token's forward attends to (real prompt tokens + tokens generated before it);
prefill FLOPs are not counted. The same count is used for both sides.

    python benchmarks/rollout.py                         # tiny, and rewards (~2 minutes)
    python benchmarks/rollout.py --model qwen2.5-0.5b    # (~5-7 minutes on 2 cores)
"""

# The repository root goes on sys.path before the imports below.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if "--r1jax-from" in sys.argv:  # another checkout's r1jax (e.g. a baseline): before the imports
    sys.path.insert(0, os.path.abspath(sys.argv[sys.argv.index("--r1jax-from") + 1]))

import jax
import numpy as np

from benchmarks import common
from r1jax import sampling
from r1jax.models import get_preset
from r1jax.models.hf import load_hf

UNROLL_DECODE = False  # --unroll-decode: ModelConfig.unroll_decode on the r1jax side


def make_hf_model(preset: str, path: str):
    """A random transformers Qwen2 model with the preset's shape, saved to `path`."""
    import torch
    import transformers

    c = get_preset(preset)
    config = transformers.Qwen2Config(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, rms_norm_eps=c.rms_eps, rope_theta=c.rope_theta,
        tie_word_embeddings=c.tie_embeddings, max_position_embeddings=4096,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.save_pretrained(path)
    return model


def make_prompts(B: int, vocab: int, lo: int, hi: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(1, vocab, rng.integers(lo, hi + 1)).tolist() for _ in range(B)]
    tokens, mask = sampling.pad_prompts(prompts, pad_id=0)
    return tokens, mask, np.array([len(p) for p in prompts])


def torch_default_threads() -> int:
    import torch

    return torch.get_num_threads()


def model_flops(cfg, prompt_lens, G: int, T: int) -> float:
    context = prompt_lens[:, None] + np.arange(T)[None]  # [B, T]
    per_token = 2 * common.matmul_params(cfg)
    attn = 4 * cfg.n_layers * cfg.n_heads * cfg.head_dim
    return float(G * (per_token * context.size + attn * context.sum()))


def setup_ours(cfg, params, tokens, mask, G: int, T: int):
    """Compiles the sampler; returns (timings, run) with run() one full group rollout."""
    s = sampling.SamplingConfig(max_new_tokens=T, temperature=1.0, eos_ids=())
    t0 = time.perf_counter()
    lowered = sampling.generate.lower(params, tokens, mask, jax.random.key(0), cfg=cfg, s=s,
                                      group_size=G)  # fmt: skip
    t1 = time.perf_counter()
    fn = lowered.compile()
    t2 = time.perf_counter()
    calls = iter(range(1, 1000))
    run = lambda: fn(params, tokens, mask, jax.random.key(next(calls)))  # noqa: E731
    t3 = time.perf_counter()
    out = jax.device_get(run())
    first = time.perf_counter() - t3
    assert out["tokens"].shape == (len(tokens) * G, T) and out["mask"].all(), "rows ended early"
    return {"compile": t2 - t0, "lower": t1 - t0, "first": first}, run


def setup_theirs(model, tokens, mask, G: int, T: int, threads: int):
    """Warms transformers up with a 2-token generate; returns (timings, run)."""
    import torch

    ids, am = torch.from_numpy(tokens.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))

    def run(n_new=T):
        default = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=am, do_sample=True,
                                     temperature=1.0, top_k=0, top_p=1.0,
                                     num_return_sequences=G, max_new_tokens=n_new,
                                     min_new_tokens=n_new, eos_token_id=None,
                                     pad_token_id=0)  # fmt: skip
        finally:
            torch.set_num_threads(default)
        assert out.shape == (len(tokens) * G, tokens.shape[1] + n_new), out.shape
        return out

    return {"compile": "eager", "first": common.timed_first_call(lambda: run(2))}, run


def bench_model(preset: str, B: int, G: int, T: int, lens: tuple[int, int], repeats: int,
                torch_threads: list[int]) -> list[list]:  # fmt: skip
    """Rows for r1jax and for transformers at each torch thread count. The timed runs alternate
    between the sides, so a change in the machine's load hits all of them alike; the speed
    ratio is taken against the fastest transformers setting."""
    with tempfile.TemporaryDirectory(prefix="r1jax-bench-") as tmp:
        t0 = time.perf_counter()
        model = make_hf_model(preset, tmp)
        cfg, params = load_hf(tmp)
        cfg = cfg.replace(unroll_decode=UNROLL_DECODE)
        print(f"{preset}: made, saved and loaded in {time.perf_counter() - t0:.1f}s")
    tokens, mask, plens = make_prompts(B, cfg.vocab_size, *lens)
    flops, n_tok = model_flops(cfg, plens, G, T), B * G * T
    sides = {"r1jax": setup_ours(cfg, params, tokens, mask, G, T)}
    for n in torch_threads:
        sides[f"transformers, {n} thread(s)"] = setup_theirs(model, tokens, mask, G, T, n)
    # r1jax's first run after compile is already a full timed rollout: it counts as one.
    times: dict[str, list[float]] = {k: [] for k in sides}
    times["r1jax"].append(sides["r1jax"][0]["first"])
    for _ in range(repeats):
        for name, (_, run) in sides.items():
            if len(times[name]) < repeats:
                times[name].append(common.timeit(run, warmup=0, repeats=1)["median"])
                print(f"{preset} {name}: {times[name][-1]:.2f}s", flush=True)
    del params, model
    shape = f"{B} x {G} x {T} (prompts {lens[0]}-{lens[1]}, padded {tokens.shape[1]})"
    # Rates use each side's best run: on a shared machine the median mostly measures the load.
    rows, best = [], {k: min(v) for k, v in times.items()}
    for name, (info, _) in sides.items():
        s, med = best[name], float(np.median(times[name]))
        rows.append([preset, name, shape, info["compile"], info["first"], med, s, n_tok / s,
                     flops / s / 1e9, 0.0])  # fmt: skip
    theirs = min(v for k, v in best.items() if k != "r1jax")
    for row in rows:
        row.append(f"{theirs / row[6]:.2f}x")
    rows[0][-1] = f"**{rows[0][-1]}**"
    return rows


def make_math_items(n: int, seed: int = 0):
    """Boxed completions against gold answers: half right (some in another but equal form)."""
    rng = np.random.default_rng(seed)
    golds, completions = [], []
    for i in range(n):
        a, b = int(rng.integers(1, 50)), int(rng.integers(2, 50))
        gold, same = [(f"\\frac{{{a}}}{{{b}}}", f"{a / b:.6g}" if (b % 2 == 0 or b % 5 == 0)
                       else f"\\dfrac{{{2 * a}}}{{{2 * b}}}"),
                      (str(a * b), f"{a * b}"),
                      (f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}"),
                      (f"({a}, {b})", f"({a},{b})")][i % 4]  # fmt: skip
        pred = same if rng.random() < 0.5 else str(a + b + 1)
        golds.append(gold)
        completions.append(f"Adding things up step by step gives {pred}. Final: \\boxed{{{pred}}}")
    return golds, completions


def bench_rewards(n: int, workers: int) -> list[list]:
    from r1jax.rewards import RewardPool, RewardStack

    golds, completions = make_math_items(n)
    prompts = ["Compute it."] * n
    rows = []
    for w in (workers, 0):
        with RewardPool(workers=w, timeout_s=10.0) as pool:
            stack = RewardStack([("math", 1.0)], pool=pool)
            warm = common.timed_first_call(
                lambda s=stack: s(prompts[:8], completions[:8], {"answer": golds[:8]})
            )
            t0 = time.perf_counter()
            res = stack(prompts, completions, {"answer": golds})
            dt = time.perf_counter() - t0
        label = f"RewardPool(workers={w})" + (" (auto)" if w == 0 else "")
        rows.append([label, n, warm, dt, n / dt, f"{res.correct.mean():.2f}",
                     res.counters["timeouts"] + res.counters["exceptions"]])  # fmt: skip
        print(rows[-1])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", choices=["tiny", "qwen2.5-0.5b"])
    ap.add_argument("--new", type=int, default=128, help="new tokens per sample")
    ap.add_argument("--repeats", type=int, help="timed runs per side (default 5; 0.5b: 1)")
    ap.add_argument("--torch-threads", help="comma-separated torch thread counts to time "
                    "(default: 1 and torch's default)")  # fmt: skip
    ap.add_argument("--reward-items", type=int, default=400)
    ap.add_argument("--no-rewards", action="store_true", help="skip the reward-pool timing")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    ap.add_argument("--r1jax-from", metavar="DIR", help="import r1jax from DIR/r1jax instead")
    ap.add_argument("--section", help="section of RESULTS.md (default: 'Rollout: <model>')")
    ap.add_argument("--unroll-decode", action="store_true", help="r1jax with unroll_decode=True")
    args = ap.parse_args()
    global UNROLL_DECODE
    UNROLL_DECODE = args.unroll_decode
    B, G, T = 16, 8, args.new
    repeats = args.repeats or (5 if args.model == "tiny" else 1)
    import r1jax

    print("r1jax from", os.path.dirname(r1jax.__file__))

    peaks = [common.matmul_peak()]
    print("matmul peak", peaks[-1])
    threads = (
        [int(t) for t in args.torch_threads.split(",")]
        if args.torch_threads
        else sorted({1, torch_default_threads()})
    )
    rows = bench_model(args.model, B, G, T, (16, 64), repeats, threads)
    peaks.append(common.matmul_peak())
    print("matmul peak", peaks[-1])
    peak = max(max(p["jax"], p.get("torch", 0.0)) for p in peaks)
    for r in rows:  # fraction of peak: the model GFLOP/s over the machine's peak
        r[9] = r[8] / peak

    header = ["model", "side", "B x G x new", "compile s", "first run s", "median s", "best s",
              "tokens/s", "model GFLOP/s", "fraction of peak",
              "vs fastest transformers"]  # fmt: skip
    jax_peak = max(p["jax"] for p in peaks)
    torch_peak = max(p.get("torch", 0.0) for p in peaks)
    ratio = rows[0][7] / max(r[7] for r in rows[1:])
    body = f"""
Generated tokens per second, r1jax `sampling.generate` (jit, XLA CPU) against transformers
`generate` (PyTorch eager, CPU), identical random fp32 weights (transformers model saved with
`save_pretrained`, loaded with `r1jax.models.hf.load_hf`), EOS off on both sides,
temperature 1, no top-k/top-p, left-padded prompts, r1jax unroll_decode={UNROLL_DECODE}.
"compile" = trace + lower + XLA compile;
"first run" = first execution after it (transformers: a 2-token warm-up generate). Each side
has {repeats} timed run(s) (r1jax's first run counts as one), alternating between the sides;
tokens/s, GFLOP/s, fraction of peak and the ratio use each side's best run, because on a
shared machine the median mostly measures the other processes. transformers is timed at each
torch thread count listed; the ratio is against its fastest setting.

Matmul peak of this machine, measured in the same run (fp32 2048^3, best of 7, before and after
the benchmark): jax {jax_peak:.0f} GFLOP/s, torch {torch_peak:.0f} GFLOP/s; "fraction of peak"
divides by the higher, {peak:.0f} GFLOP/s. Model FLOPs per generated token =
2 * matmul params + 4 * L * H * Dh * (real prompt length + tokens generated before it);
prefill not counted.

{common.table(header, rows)}

r1jax / fastest transformers: **{ratio:.2f}x**; r1jax at **{rows[0][9]:.0%}** of the matmul
peak.
"""
    if args.model == "tiny":
        body += f"""
Targets for the tiny preset: r1jax >= 3x transformers' tokens/s ({ratio:.2f}x:
{"met" if ratio >= 3 else "NOT met"}) and >= 50% of the matmul peak ({rows[0][9]:.0%}:
{"met" if rows[0][9] >= 0.5 else "NOT met"}).
"""
    if not args.no_rewards and args.model == "tiny":
        rrows = bench_rewards(args.reward_items, workers=os.cpu_count() or 2)
        rheader = ["math accuracy via", "items", "warm-up s (8 items, incl. worker start)",
                   "timed s", "verifications/s", "fraction correct", "timeouts+errors"]  # fmt: skip
        body += f"""
Math verifications per second (`RewardStack([("math", 1.0)])`, boxed answers such as
`\\frac{{a}}{{b}}` vs a decimal, `a\\sqrt{{b}}` vs `\\sqrt{{a^2 b}}`, tuples; half correct):

{common.table(rheader, rrows)}
"""
    print(body)
    if not args.no_write:
        common.write_section(args.section or f"Rollout: {args.model}", body)


if __name__ == "__main__":
    main()
