"""MoE against dense: forward+backward tokens/s at equal activated parameters, and the share of
the MoE layer's time spent outside the expert matmuls (routing, sort, gather, scatter).

Dense: the `tiny` shapes (D=256, L=4, F=1024). MoE: the same with every MLP replaced by 8
routed experts of F=512, top-2 (2 x 512 = the dense F), DeepSeek-V3 routing (sigmoid, bias).
Timed: jit(value_and_grad) of the summed next-token log-prob over [N, T] tokens, with each
grouped-matmul form (ModelConfig.expert_matmul: ragged = jax.lax.ragged_dot, blocked = expert
runs padded to whole blocks and one batched matmul). Dispatch share: one MoE layer's forward
(moe.moe_ffn) against the same three matmuls on pre-sorted, equally sized groups (ragged_dot
alone, and a batched einsum over the equal groups: what an ideal grouped matmul costs), over
N*T tokens. Best of --repeats.

    python benchmarks/moe.py            # appends a section to benchmarks/RESULTS.md
    python benchmarks/moe.py --no-write
"""

# ruff: noqa: E402
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp

from r1jax.models import moe
from r1jax.models import transformer as tfm
from r1jax.models.config import get_preset

FORMS = ("ragged", "blocked")  # ModelConfig.expert_matmul


def best(fn, repeats):
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def train_seconds(cfg, n, t, repeats):
    params = tfm.init_params(cfg, jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (n, t), 0, cfg.vocab_size)
    ones = jnp.ones((n, t), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(t), (n, t))

    @jax.jit
    def step(p):
        return jax.value_and_grad(
            lambda p: tfm.target_logprobs(p, tokens, pos, ones, cfg)[0].sum()
        )(p)

    return best(lambda: step(params), repeats)


def dispatch_share(cfg, tokens, repeats):
    """(layer forward s per form, ragged_dot matmuls alone s, equal-group einsum matmuls s)."""
    key = jax.random.PRNGKey(0)
    lp = jax.tree.map(lambda a: a[0], tfm.init_params(cfg, key)["moe_layers"])
    x = jax.random.normal(key, (1, tokens, cfg.d_model))
    t_full = {}
    for form in FORMS:
        c = cfg.replace(expert_matmul=form)
        full = jax.jit(lambda x, c=c: moe.moe_ffn(x, lp, c)[0])
        t_full[form] = best(lambda full=full: full(x), repeats)
    a, E = tokens * cfg.n_experts_per_tok, cfg.n_experts
    sizes = jnp.full((E,), a // E, jnp.int32)
    xs = jax.random.normal(key, (a, cfg.d_model))

    @jax.jit
    def ragged(xs):
        h = jax.nn.silu(jax.lax.ragged_dot(xs, lp["we_gate"], sizes))
        h = h * jax.lax.ragged_dot(xs, lp["we_up"], sizes)
        return jax.lax.ragged_dot(h, lp["we_down"], sizes)

    @jax.jit
    def grouped(xs):
        x_ECD = xs.reshape(E, a // E, -1)
        h = jax.nn.silu(jnp.einsum("ecd,edf->ecf", x_ECD, lp["we_gate"]))
        h = h * jnp.einsum("ecd,edf->ecf", x_ECD, lp["we_up"])
        return jnp.einsum("ecf,efd->ecd", h, lp["we_down"])

    return t_full, best(lambda: ragged(xs), repeats), best(lambda: grouped(xs), repeats)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--t", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    dense = get_preset("tiny")
    sparse = dense.replace(
        n_experts=8, n_experts_per_tok=2, moe_d_ff=512, router="sigmoid", n_group=1,
        norm_topk_prob=True, routed_scaling=1.0,
    )  # fmt: skip
    toks = args.n * args.t
    rows = []
    models = [("dense", dense)] + [(f"moe, {f}", sparse.replace(expert_matmul=f)) for f in FORMS]
    for name, cfg in models:
        s = train_seconds(cfg, args.n, args.t, args.repeats)
        rows.append(
            f"| {name} | {tfm.count_params(cfg):,} | {tfm.count_active_params(cfg):,} | "
            f"{s * 1e3:.1f} | {toks / s:,.0f} |"
        )
    t_full, t_ragged, t_grouped = dispatch_share(sparse, toks, args.repeats)
    device = jax.devices()[0]
    text = "\n".join(
        [
            "",
            "## MoE vs dense (benchmarks/moe.py)",
            "",
            f"Date 2026-12-02; {device.platform} ({device.device_kind}), {platform.machine()}, "
            f"jax {jax.__version__}; `python benchmarks/moe.py`; N x T = {args.n} x {args.t}, "
            f"fp32, best of {args.repeats}. Dense = `tiny`; MoE = the same with 8 routed "
            "experts of F=512, top-2 (equal activated MLP size).",
            "",
            "| model | params | activated | fwd+bwd ms | tokens/s |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"One MoE layer forward over {toks} tokens: "
            + ", ".join(f"{f} {t * 1e3:.2f} ms" for f, t in t_full.items())
            + f". The expert matmuls alone on pre-sorted equal groups: ragged_dot "
            f"{t_ragged * 1e3:.2f} ms, a batched einsum {t_grouped * 1e3:.2f} ms. Time outside "
            f"the matmuls (routing, sort, gather, scatter, block padding) with ragged_dot: "
            f"{max(0.0, 1 - t_ragged / t_full['ragged']):.0%}; blocked against the einsum: "
            f"{max(0.0, 1 - t_grouped / t_full['blocked']):.0%}.",
            "",
        ]
    )
    print(text)
    if not args.no_write:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
        with open(path, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
