"""GRPO on the embedded base, dense or upcycled to a MoE: per-step reward, accuracy and phase
times (benchmarks/RESULTS.md, "GRPO on the upcycled embedded base"; the settings of
tests/test_moe.py::test_grpo_trains_the_embedded_base_upcycled_to_a_moe by default).

    python benchmarks/moe_upcycle_grpo.py --model=moe --seed=0 --lr=3e-4 --steps=10
    python benchmarks/moe_upcycle_grpo.py --model=dense --seed=0
    python benchmarks/moe_upcycle_grpo.py --model=moe --dispatch=ragged --steps=3 --cpu_time

--cpu_time reports the phases in CPU seconds of this process (time.process_time) instead of
wall seconds: comparable across runs on a machine shared with other jobs. --opt0 compiles as
the tests do (XLA:CPU at LLVM optimisation level 0).
"""

# ruff: noqa: E402
import argparse
import os
import resource
import sys
import tempfile
import time
import types

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="moe", choices=("moe", "dense"))
ap.add_argument("--dispatch", default="auto", choices=("auto", "ragged", "blocked"))
ap.add_argument("--prompts", type=int, default=8)
ap.add_argument("--samples", type=int, default=8)
ap.add_argument("--steps", type=int, default=8)
ap.add_argument("--lr", type=float, default=3e-4)
ap.add_argument("--noise", type=float, default=0.01)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--opt0", action="store_true")
ap.add_argument("--cpu_time", action="store_true")
args = ap.parse_args()
if args.opt0:
    os.environ["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

from r1jax import configs, metrics
from r1jax import loop as loop_module
from r1jax.metrics import read_metrics
from r1jax.models import moe
from r1jax.models.store import EMBEDDED_BASE, load_model, save_model, tokenizer_path
from r1jax.stages import grpo

if args.cpu_time:
    clock = types.SimpleNamespace(perf_counter=time.process_time, time=time.time)
    metrics.time = loop_module.time = clock

tmp = tempfile.mkdtemp()
c = configs.load("r1zero")
if args.model == "moe":
    cfg, dense = load_model(EMBEDDED_BASE)
    cfg = cfg.replace(
        n_experts=4, n_experts_per_tok=2, moe_d_ff=cfg.d_ff, first_k_dense=1, router="sigmoid",
        norm_topk_prob=True, expert_matmul=args.dispatch,
    )  # fmt: skip
    params = moe.upcycle(dense, cfg, jax.random.PRNGKey(args.seed), noise=args.noise)
    save_model(f"{tmp}/moe", params, cfg, tokenizer_path(EMBEDDED_BASE))
    c.model.init = f"{tmp}/moe"
    c.model.overrides.unroll_decode = False
    c.rl.update(routing_replay=True, router_aux_coef=1e-2)
c.mesh = (("fsdp", 1),)
c.seed = args.seed
c.sampling.update(num_prompts=args.prompts, num_samples=args.samples)
c.rl.update(beta=0.0, num_minibatches=1)
c.micro_batch = args.prompts * args.samples
c.optim.update(lr=args.lr, warmup_steps=0, schedule="constant")
c.update(steps=args.steps, ckpt_every=1000, eval_every=0, samples_every=0)
t0 = time.time()
grpo.GRPO(c, f"{tmp}/run").run()
wall = time.time() - t0
unit = "CPU s" if args.cpu_time else "s"
print(f"step reward accuracy | step rollout score update ({unit})")
for r in read_metrics(f"{tmp}/run"):
    times = " ".join(f"{r[f'time/{k}_s']:.1f}" for k in ("step", "rollout", "score", "update"))
    print(f"{r['step']} {r['train/reward']:.3f} {r['train/accuracy']:.3f} | {times}")
ru = resource.getrusage(resource.RUSAGE_SELF)
print(f"run: {wall:.1f} s wall, {ru.ru_utime + ru.ru_stime:.1f} s CPU in all")
