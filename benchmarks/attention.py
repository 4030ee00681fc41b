"""Attention paths on this machine: training memory against sequence length, and speed.

1. Temporary memory of one training step (forward + backward of the summed next-token
   log-probs of one row of S tokens, a small model) from XLA's `memory_analysis()` of the
   compiled program (temp_size_in_bytes; nothing is run), for the dense and blocked paths at
   S = 1k, 4k, 16k, with r1jax.plan's estimate beside it.
2. Attention alone (causal, GQA, fp32): forward and forward + backward seconds and FLOP/s at
   T = 4k as a fraction of the dense-matmul peak measured in the same run; and dense against
   blocked at short lengths, which sets where `attention="auto"` switches.

Writes the section "Attention: memory and speed" of benchmarks/RESULTS.md.

    python benchmarks/attention.py            # ~5 minutes on 2 cores
    python benchmarks/attention.py --quick    # memory only
"""

# The repository root goes on sys.path before the imports below.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp

from benchmarks import common
from r1jax import plan as pl
from r1jax.models import attention as A
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig

MiB = 2**20
# Small width: D=128, 2 layers, 4 query heads over 2 kv heads of 32, vocabulary 256.
CFG = ModelConfig(256, 128, 2, 4, 2, 32, 512, qkv_bias=True, tie_embeddings=True)


def train_temp_bytes(cfg: ModelConfig, S: int) -> int:
    def loss(params, tokens):
        seg = jnp.ones_like(tokens)
        h = tfm.forward(params, tokens, tfm.positions_from_mask(seg), seg, cfg)
        return -tfm.token_logprobs(params, h[:, :-1], tokens[:, 1:], cfg)[0].sum()

    tok = jax.ShapeDtypeStruct((1, S), jnp.int32)
    compiled = jax.jit(jax.grad(loss)).lower(tfm.abstract_params(cfg), tok).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def memory_section(lengths) -> str:
    rows, temps = [], {}
    for path in ("dense", "blocked"):
        cfg = CFG.replace(attention=path)
        for S in lengths:
            t = train_temp_bytes(cfg, S)
            temps[path, S] = t
            est = pl.activation_bytes(
                cfg, pl.abstract_mesh({}), pl.Settings(1, 1, 1, S - 1, micro_batch=1), False
            )
            prev = temps.get((path, lengths[lengths.index(S) - 1])) if S != lengths[0] else None
            grow = f"{t / prev:.2f}x for {S // lengths[lengths.index(S) - 1]}x S" if prev else ""
            rows.append([path, S, t / MiB, grow, est / MiB, est / t])
            print(rows[-1], flush=True)
    lo, hi = lengths[0], lengths[-1]
    slope = (temps["blocked", hi] - temps["blocked", lo]) / (hi - lo)
    dense_q = (temps["dense", hi] - temps["dense", lo]) / (hi**2 - lo**2)
    head = ["path", "S", "temp MiB", "growth", "planner MiB", "planner / XLA"]
    return (
        f"Model: D={CFG.d_model}, L={CFG.n_layers}, H={CFG.n_heads}, K={CFG.n_kv_heads}, "
        f"Dh={CFG.head_dim}, F={CFG.d_ff}, V={CFG.vocab_size}, fp32, one row of S tokens, no "
        "remat; blocked with 512 x 512 blocks. temp = XLA's temp_size_in_bytes of the compiled "
        "grad of the summed next-token log-probs (the program is compiled, not run).\n\n"
        + common.table(head, rows)
        + f"\n\nBlocked: linear, slope **{slope / 1024:.1f} KiB per token** (S = {lo} to {hi}). "
        f"Dense: quadratic, {dense_q:.1f} bytes per S^2 (= {CFG.n_heads} heads x "
        f"{dense_q / CFG.n_heads:.1f}: the fp32 scores, their softmax and its cotangent, kept "
        "per layer).\n"
    )


def attn_flops(n, T, H, dh, causal=True) -> float:
    """q.k and p.v of the forward pass; causal counts the lower triangle only."""
    return 4 * n * H * T * T * dh * (0.5 if causal else 1.0)


def speed_section(T: int, short) -> str:
    peak = common.matmul_peak()["jax"]
    n, H, K, dh = 1, 8, 2, 64
    key = jax.random.split(jax.random.key(0), 3)

    def fns(path, T):
        q = jax.random.normal(key[0], (n, T, H, dh), jnp.float32)
        k = jax.random.normal(key[1], (n, T, K, dh), jnp.float32)
        v = jax.random.normal(key[2], (n, T, K, dh), jnp.float32)
        seg = jnp.ones((n, T), jnp.int32)
        cfg = ModelConfig(8, 8, 1, H, K, dh, 8, attention=path)
        attend = lambda q, k, v: A.self_attention(seg, cfg, dh, dh)(q, k, v)  # noqa: E731
        fwd = jax.jit(attend)
        grad = jax.jit(jax.grad(lambda q, k, v: attend(q, k, v).sum(), argnums=(0, 1, 2)))
        return (lambda: fwd(q, k, v)), (lambda: grad(q, k, v))

    rows = []
    for path in ("dense", "blocked"):
        f, g = fns(path, T)
        tf, tg = common.timeit(f, repeats=3)["min"], common.timeit(g, repeats=3)["min"]
        fl = attn_flops(n, T, H, dh)
        # forward + backward: the forward's 2 matmuls and the backward's 4 (recomputation of
        # the scores in the blocked backward not counted: useful FLOPs only).
        rows.append([path, tf, fl / tf / 1e9, fl / tf / 1e9 / peak, tg, 3 * fl / tg / 1e9,
                     3 * fl / tg / 1e9 / peak])  # fmt: skip
        print(rows[-1], flush=True)
    head = ["path", "fwd s", "fwd GFLOP/s", "fwd / peak", "fwd+bwd s", "fwd+bwd GFLOP/s",
            "fwd+bwd / peak"]  # fmt: skip
    out = (
        f"Attention alone at T = {T}: one row, H={H} query heads over K={K} kv heads of {dh}, "
        f"causal, fp32, best of 3. Useful FLOPs = 4 * H * T^2 * Dh / 2 (forward; the causal "
        f"half), x3 with the backward. Dense-matmul peak measured in this run (fp32 2048^3, "
        f"best of 7): **{peak:.0f} GFLOP/s**.\n\n" + common.table(head, rows)
    )
    rows = []
    for T in short:
        gd, gb = fns("dense", T)[1], fns("blocked", T)[1]
        td, tb = common.timeit(gd, repeats=3)["min"], common.timeit(gb, repeats=3)["min"]
        rows.append([T, td * 1e3, tb * 1e3, td / tb])
        print(rows[-1], flush=True)
    out += (
        "\n\nForward + backward, dense against blocked (512 x 512 blocks) at short lengths, "
        "same shapes (ms, best of 3):\n\n"
        + common.table(["T", "dense ms", "blocked ms", "dense / blocked"], rows)
    )
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="memory only")
    ap.add_argument("--section", default="Attention: memory and speed")
    args = ap.parse_args()
    body = "### Training memory against sequence length\n\n" + memory_section([1024, 4096, 16384])
    if not args.quick:
        body += "\n### Speed\n\n" + speed_section(4096, [256, 512, 1024, 2048])
    print(body)
    common.write_section(args.section, body)


if __name__ == "__main__":
    main()
