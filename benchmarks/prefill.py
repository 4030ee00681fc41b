"""Prefill memory and time against prompt length: whole prompt vs chunked (sampling.prefill_chunk).

For a batch of B left-padded prompts of P tokens (a small model: D=128, 2 layers, 4 query heads
over 2 kv heads of 32, MLP 512, attention "auto", i.e. blocked past 512 keys on CPU), the jitted
`sampling.prefill` (KV cache fp32 plus the last logits) is compiled at each P, and XLA's
`memory_analysis()` of the compiled program gives its temporary memory (temp_size_in_bytes:
activations; the KV cache it returns is output_size_in_bytes, the same for both). Then each is
run: best of `--repeats` seconds.

    python benchmarks/prefill.py                 # ~4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import sys

# The repository root goes on sys.path before the imports below.
# ruff: noqa: E402
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

from benchmarks import common
from r1jax import sampling
from r1jax.models import init_params
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig

MiB = 2**20
CFG = ModelConfig(256, 128, 2, 4, 2, 32, 512, qkv_bias=True, tie_embeddings=True)


def compiled_prefill(cfg, B: int, P: int, chunk: int):
    s = sampling.SamplingConfig(prefill_chunk=chunk, kv_dtype="float32")

    def run(params, tokens, mask):
        h, prefix = sampling.prefill(params, tokens, mask, cfg, s)
        return tfm.logits_from_hidden(params, h, cfg), prefix

    tok = jax.ShapeDtypeStruct((B, P), np.int32)
    return jax.jit(run).lower(tfm.abstract_params(cfg), tok, tok).compile()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4, help="B prompts")
    ap.add_argument("--lengths", default="1024,4096,16384", help="prompt lengths P")
    ap.add_argument("--chunk", type=int, default=512, help="prefill_chunk of the chunked side")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    args = ap.parse_args()
    B, C = args.batch, args.chunk
    params = init_params(CFG, jax.random.key(0))
    rows = []
    for P in map(int, args.lengths.split(",")):
        rng = np.random.default_rng(P)
        lengths = rng.integers(P // 2, P + 1, B)  # left padding of up to half the width
        ids = [rng.integers(1, CFG.vocab_size, n).tolist() for n in lengths]
        tokens, mask = sampling.pad_prompts(ids, 0, P)
        outs = {}
        for name, chunk in (("whole", 0), (f"chunk {C}", C)):
            fn = compiled_prefill(CFG, B, P, chunk)
            mem = fn.memory_analysis()
            run = lambda f=fn, t=tokens, m=mask: f(params, t, m)  # noqa: E731
            t = common.timeit(run, warmup=1, repeats=args.repeats)
            outs[name] = jax.device_get(fn(params, tokens, mask)[0])
            rows.append([P, name, mem.temp_size_in_bytes / MiB, mem.output_size_in_bytes / MiB,
                         t["min"], B * P / t["min"]])  # fmt: skip
            print(rows[-1], flush=True)
        diff = float(np.abs(outs["whole"] - outs[f"chunk {C}"]).max())
        rows[-1].append(f"{diff:.1e}")
        rows[-2].append("")
    header = ["P", "prefill", "temp MiB", "output MiB (KV)", "best s", "prompt tokens/s",
              "max |last logits - whole|"]  # fmt: skip
    body = f"""
`python benchmarks/prefill.py`: {B} left-padded prompts of P tokens (real lengths uniform in
[P/2, P]), model D={CFG.d_model}, {CFG.n_layers} layers, {CFG.n_heads} query / {CFG.n_kv_heads}
kv heads of {CFG.head_dim}, MLP {CFG.d_ff}, fp32, attention auto (blocked past 512 keys),
KV fp32. temp = XLA's temp_size_in_bytes of the compiled `sampling.prefill` (activations), output
= its KV cache and last logits; time: best of {args.repeats} runs.

{common.table(header, rows)}
"""
    print(body)
    if not args.no_write:
        common.write_section("Prefill: whole prompt vs chunked", body)


if __name__ == "__main__":
    main()
