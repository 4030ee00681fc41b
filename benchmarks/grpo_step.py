"""Seconds per full GRPO step on CPU: r1jax's Trainer against TRL's GRPOTrainer, same weights.

One random transformers Qwen2 model (hidden 256, 4 layers, 4 heads, 2 KV heads, MLP 1024,
vocab 64), saved with `save_pretrained`; r1jax loads the same file with `load_hf`. Both sides
run the same on-policy GRPO step: 16 prompts of 16 words (no padding) x G=8 samples of exactly
64 new tokens at temperature 1 (EOS can never be sampled: TRL's EOS is a token outside the
model's 64 logits, r1jax's sampler gets no EOS ids), the same in-process Python reward, group
advantages, reference log-probs (beta=0.04, k3), one fp32 AdamW update on all 128 completions
(loss_type "grpo", no gradient checkpointing / remat on either side). r1jax runs on one CPU
device (mesh fsdp=1); TRL uses transformers `generate` (no vLLM) on torch's default threads.

Both sides may split the 128 rows of the update (and of the reference pass) into micro-batches
with exact gradient accumulation: the same single optimizer step, only the working set changes
(small micro-batches keep XLA CPU's activations in cache). r1jax uses --micro (16); TRL runs once
per value of --trl-micro (per_device_train_batch_size = micro, gradient_accumulation_steps =
steps_per_generation = 128 / micro, so one generation of 128 completions per optimizer step),
and its fastest setting is the one compared.

Per-phase times: r1jax's own metrics.jsonl (time/rollout_s, reward_s, score_s, update_s,
step_s); TRL's by wrapping its methods (`_generate`, `_calculate_rewards`, the no-grad
`_get_per_token_logps_and_entropies` calls, `_prepare_inputs`) and a callback from step begin to
step end; TRL's update = step - `_prepare_inputs` (forward, backward, clip, optimizer step).
The first --warmup steps (compilation, allocation) are dropped; medians over --steps.

Model FLOPs (the same count for both sides; C = 2 * matmul params, A = 4 * L * H * Dh):
generation = sum over the N*T generated tokens of C + A * (P + t) (prefill not counted);
reference = N * S * (C + A * (S + 1) / 2) (one causal forward over S = P + T tokens);
update = 3 * reference (forward + backward).

    python benchmarks/grpo_step.py               # ~5 minutes on 2 cores
    python benchmarks/grpo_step.py --steps 5 --no-write
"""

# The repository root goes on sys.path before the imports below.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if "--r1jax-from" in sys.argv:  # another checkout's r1jax (e.g. a baseline): before the imports
    sys.path.insert(0, os.path.abspath(sys.argv[sys.argv.index("--r1jax-from") + 1]))

import numpy as np

from benchmarks import common

D, L, H, K, F, V = 256, 4, 4, 2, 1024, 64
B, G, P, T = 16, 8, 16, 64
BETA, LR = 0.04, 1e-6
PHASES = ("rollout", "reward", "score", "update", "step")


def reward_low_words(prompts, completions, **kwargs):
    """Share of the words w1..w8 in the completion: cheap, deterministic, varies in a group."""
    low = {f"w{i}" for i in range(1, 9)}
    return [sum(w in low for w in c.split()) / max(len(c.split()), 1) for c in completions]


def make_model_dir(path: str) -> None:
    """Random fp32 Qwen2 weights plus a 64-word tokenizer (eos 'w63', pad 'w0') for r1jax."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    config = transformers.Qwen2Config(
        vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
        num_attention_heads=H, num_key_value_heads=K, max_position_embeddings=512,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(path)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(V)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": f"w{V - 1}", "pad_token": "w0", "bos_token": None}, f)


def make_prompts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{i}" for i in rng.integers(1, V - 1, P)) for _ in range(n)]


# -- r1jax ----------------------------------------------------------------------------------------
def run_r1jax(
    model_dir: str, prompts: list[str], steps: int, workdir: str, micro: int
) -> list[dict]:
    """GRPO.run() over `steps` steps; returns metrics.jsonl rows."""
    import ml_collections

    from r1jax import configs
    from r1jax.stages import grpo

    data = os.path.join(workdir, "data")
    os.makedirs(data)
    for split in ("train", "test"):
        with open(os.path.join(data, f"{split}.jsonl"), "w") as f:
            for i, q in enumerate(prompts):
                f.write(json.dumps({"id": str(i), "question": q, "answer": "0"}) + "\n")
    c = configs.load("r1zero")
    c.model.init = model_dir
    c.model.overrides.update(
        param_dtype="float32", dtype="float32", remat=False, unroll_decode=True
    )
    c.mesh = (("fsdp", 1),)
    c.data.update(name=f"jsonl:{data}/{{split}}.jsonl", template="plain")
    c.rewards = ml_collections.ConfigDict(
        {"low": dict(name="benchmarks.grpo_step:reward_low_words", weight=1.0, kwargs={})}
    )
    c.correctness, c.reward_pool.workers = None, 0
    c.sampling.update(num_prompts=B, num_samples=G, max_new_tokens=T, chunk=16, max_prompt_len=P,
                      temperature=1.0, top_p=1.0, top_k=0)  # fmt: skip
    c.rl.update(loss_type="grpo", beta=BETA, num_minibatches=1, num_epochs=1,
                ref_reset_every=0, adv_scale="group")  # fmt: skip
    c.micro_batch = micro
    c.optim.update(lr=LR, warmup_steps=0, schedule="constant", weight_decay=0.0, b2=0.999,
                   grad_clip=1.0)  # fmt: skip
    c.steps, c.log_every, c.ckpt_every = steps, 1, 10**6
    c.eval_every, c.samples_every = 0, 0
    trainer = grpo.GRPO(c, os.path.join(workdir, "run"))
    # No EOS: every row samples exactly T tokens from the full 64-token distribution, like TRL's.
    trainer.s_train = dataclasses.replace(trainer.s_train, eos_ids=())
    trainer.run()
    with open(os.path.join(workdir, "run", "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert all(r["train/completion_len"] == T for r in rows), "rows ended early"
    return [{p: r[f"time/{p}_s"] for p in PHASES} for r in rows]


# -- TRL ------------------------------------------------------------------------------------------
def run_trl(model_dir: str, prompts: list[str], steps: int, workdir: str, micro: int) -> list[dict]:
    """GRPOTrainer.train() over `steps` steps with its phases timed; one dict per step."""
    import datasets
    import torch
    import transformers
    from trl import GRPOConfig, GRPOTrainer

    # The same words; EOS is an added token (id 64) the model can never emit.
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(model_dir, "tokenizer.json"), eos_token="<eos>", pad_token="w0"
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = GRPOConfig(
        output_dir=os.path.join(workdir, f"trl{micro}"), max_steps=steps, seed=0,
        per_device_train_batch_size=micro, gradient_accumulation_steps=B * G // micro,
        num_generations=G, steps_per_generation=B * G // micro, num_iterations=1,
        max_completion_length=T,
        temperature=1.0, top_p=1.0, top_k=0, use_vllm=False, loss_type="grpo", beta=BETA,
        scale_rewards="group", learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0,
        max_grad_norm=1.0, bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none",
        dataloader_num_workers=0, log_completions=False, disable_tqdm=True,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_low_words,
        args=args,
        train_dataset=datasets.Dataset.from_dict({"prompt": prompts}),
        processing_class=tok,
    )
    cur: dict[str, float] = {}
    rows: list[dict] = []

    def timed(name, fn, when=lambda: True):
        def wrapper(*a, **kw):
            if not when():
                return fn(*a, **kw)
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            cur[name] = cur.get(name, 0.0) + time.perf_counter() - t0
            return out

        return wrapper

    trainer._generate = timed("rollout", trainer._generate)
    trainer._calculate_rewards = timed("reward", trainer._calculate_rewards)
    trainer._get_per_token_logps_and_entropies = timed(
        "score",
        trainer._get_per_token_logps_and_entropies,
        when=lambda: not torch.is_grad_enabled(),
    )
    trainer._prepare_inputs = timed("prepare", trainer._prepare_inputs)

    class StepTimer(transformers.TrainerCallback):
        def on_step_begin(self, *a, **kw):
            cur.clear()
            cur["t0"] = time.perf_counter()

        def on_step_end(self, *a, **kw):
            step = time.perf_counter() - cur.pop("t0")
            rows.append({**cur, "step": step, "update": step - cur["prepare"]})
            assert trainer._metrics["train"]["completions/min_length"][-1] == T, "ended early"

    trainer.add_callback(StepTimer())
    trainer.train()
    return rows


# -- report ---------------------------------------------------------------------------------------
def model_flops(cfg) -> dict[str, float]:
    C, A, N, S = 2 * common.matmul_params(cfg), 4 * L * H * cfg.head_dim, B * G, P + T
    gen = N * sum(C + A * (P + t) for t in range(T))
    ref = N * S * (C + A * (S + 1) / 2)
    return {"rollout": gen, "score": ref, "update": 3 * ref}


def median_phases(rows: list[dict]) -> dict[str, float]:
    return {p: statistics.median(r.get(p, 0.0) for r in rows) for p in PHASES}


def side_table(t: dict, flops: dict, peak: float) -> str:
    rows = []
    for p in PHASES:
        gflops = flops[p] / t[p] / 1e9 if p in flops else None
        frac = f"{gflops / peak:.1%}" if gflops else "-"
        rows.append([p, t[p], f"{gflops:.1f}" if gflops else "-", frac])
    return common.table(["phase", "median s", "model GFLOP/s", "fraction of peak"], rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="measured steps per side")
    ap.add_argument("--warmup", type=int, default=2, help="steps dropped first")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    ap.add_argument("--r1jax-from", metavar="DIR", help="import r1jax from DIR/r1jax instead")
    ap.add_argument("--section", default="GRPO step: r1jax vs TRL")
    ap.add_argument("--micro", type=int, default=16, help="r1jax rl.micro_batch")
    ap.add_argument("--trl-micro", default="128,16", help="TRL micro-batch sizes to try")
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the runs (noise)")
    args = ap.parse_args()
    n = args.steps + args.warmup
    load = os.getloadavg()
    print(f"load average {load}")
    import torch
    import trl

    import r1jax
    from r1jax.models.hf import load_hf

    print("r1jax from", os.path.dirname(r1jax.__file__))

    peaks = [common.matmul_peak()]
    print("matmul peak", peaks[-1])
    with tempfile.TemporaryDirectory(prefix="r1jax-grpo-bench-") as tmp:
        model_dir = os.path.join(tmp, "model")
        make_model_dir(model_dir)
        cfg, _ = load_hf(model_dir)
        prompts = make_prompts(B * n)
        # Each run drops its own warm-up steps; the runs alternate so that a slow spell of this
        # shared machine does not land on one side only.
        runs: dict[str, list[dict]] = {}
        for r in range(args.rounds):
            for name, fn, micro in [("r1jax", run_r1jax, args.micro)] + [
                (f"TRL micro={m}", run_trl, int(m)) for m in args.trl_micro.split(",")
            ]:
                t0 = time.perf_counter()
                rows = fn(model_dir, prompts, n, os.path.join(tmp, f"{name}-{r}"), micro)
                print(f"{name} round {r}: {time.perf_counter() - t0:.0f}s")
                for i, row in enumerate(rows):
                    print(" ", i + 1, {k: round(v, 3) for k, v in row.items()})
                runs.setdefault(name, []).extend(rows[args.warmup :])
    peaks.append(common.matmul_peak())
    print("matmul peak", peaks[-1])
    jax_peak = max(p["jax"] for p in peaks)
    torch_peak = max(p.get("torch", 0.0) for p in peaks)
    peak = max(jax_peak, torch_peak)
    flops = model_flops(cfg)
    med = {name: median_phases(rows) for name, rows in runs.items()}
    a = med.pop("r1jax")
    trl_name = min(med, key=lambda k: med[k]["step"])
    b = med[trl_name]
    trl_all = ", ".join(f"{k}: {v['step']:.3g} s" for k, v in med.items())
    ratio_rows = [[p, a[p], b[p], f"{b[p] / a[p]:.2f}x"] for p in PHASES]
    speedup = b["step"] / a["step"]
    update_frac = flops["update"] / a["update"] / 1e9 / peak
    other = {k: v["step"] - sum(v[p] for p in PHASES[:4]) for k, v in (("r1jax", a), ("TRL", b))}
    body = (
        f"""
One full on-policy GRPO step (rollout, rewards, reference log-probs, one update) of r1jax's
`Trainer` against TRL {trl.__version__} `GRPOTrainer` (PyTorch CPU, transformers `generate`, no
vLLM), identical random fp32 Qwen2 weights (D={D}, L={L}, H={H}, K={K}, F={F}, V={V},
{common.matmul_params(cfg):,} matmul params; transformers `save_pretrained`, r1jax `load_hf`).
Per step: B={B} prompts of P={P} tokens (no padding) x G={G} samples of exactly T={T} tokens
(temperature 1, no top-k/top-p, EOS never sampled on either side), an in-process Python reward,
group-scaled advantages, reference log-probs (beta={BETA}, k3), one AdamW step on all {B * G}
completions (num_iterations / num_epochs 1, loss_type "grpo"), fp32, no gradient checkpointing /
remat. The update may be split into micro-batches with exact gradient accumulation, still one
optimizer step: r1jax micro_batch={args.micro} (num_minibatches=1; the reference pass uses the
same micro-batches; model overrides unroll_decode=True); TRL per_device_train_batch_size = m,
gradient_accumulation_steps = steps_per_generation = {B * G} / m, tried at m in
{{{args.trl_micro}}} (median step: {trl_all}); the fastest, {trl_name}, is compared. r1jax on
one CPU device (mesh fsdp=1); TRL with torch's {torch.get_num_threads()} threads. r1jax's times
are its metrics.jsonl `time/*_s`; TRL's come from wrapping `_generate` (rollout),
`_calculate_rewards` (reward), the no-grad `_get_per_token_logps_and_entropies` calls (score) and
a step-begin..step-end callback (step); TRL's update = step - `_prepare_inputs` (forward,
backward, clip, optimizer). Each run drops its first {args.warmup} steps (compilation) and
measures {args.steps}; the runs alternated {args.rounds} times (r1jax, then each TRL setting);
medians over all measured steps of a setting. "step" also holds what no phase covers
(advantages, batching, bookkeeping: r1jax {other["r1jax"]:.3f} s, TRL {other["TRL"]:.3f} s).

Matmul peak measured in the same run (fp32 2048^3, best of 7, before and after): jax
{jax_peak:.0f} GFLOP/s, torch {torch_peak:.0f} GFLOP/s; fractions are of the higher,
{peak:.0f} GFLOP/s. Model FLOPs (C = 2 x matmul params, A = 4 L H Dh, N = B G, S = P + T):
generation = sum over N x T tokens of C + A (P + t), prefill not counted
({flops["rollout"] / 1e9:.1f} GFLOP); reference = N S (C + A (S + 1) / 2), one causal forward
over prompt + completion ({flops["score"] / 1e9:.1f} GFLOP); update = 3 x reference
({flops["update"] / 1e9:.1f} GFLOP).

r1jax:

{side_table(a, flops, peak)}

TRL:

{side_table(b, flops, peak)}

| phase | r1jax s | TRL s | TRL / r1jax (speed-up) |
|---|---|---|---|
"""
        + "\n".join(f"| {r[0]} | {r[1]:.3g} | {r[2]:.3g} | {r[3]} |" for r in ratio_rows)
        + f"""

Targets: r1jax >= 2x faster per full step ({speedup:.2f}x: {
            "met" if speedup >= 2 else "NOT met"
        }); update phase >= 50% of the matmul peak ({update_frac:.0%}: {
            "met" if update_frac >= 0.5 else "NOT met"
        }).
"""
    )
    print(body)
    if not args.no_write:
        common.write_section(args.section, body)


if __name__ == "__main__":
    main()
