"""Evaluation with the paper's protocol: k samples per question at T=0.6, top-p 0.95.

pass@1 is the mean correctness over all k samples of all questions (R1 §5: "pass@1 =
(1/k) sum p_i"). Correctness comes from the task's accuracy reward (RewardStack.correct).
"""

from __future__ import annotations

import jax
import numpy as np

from r1jax import sampling
from r1jax.rl import experience


def generate_for(
    params,
    cfg,
    tokenizer,
    examples,
    *,
    template,
    s: sampling.SamplingConfig,
    k: int,
    prompts_per_batch: int,
    max_prompt_len: int,
    key,
):
    """Yields (examples, prompt texts, generate output (NumPy), completion texts) per batch.

    The last batch is padded with copies of its last example so every batch has the same shape
    (one compilation); the copies are dropped from what is yielded.
    """
    for b, start in enumerate(range(0, len(examples), prompts_per_batch)):
        chunk = list(examples[start : start + prompts_per_batch])
        real = len(chunk)
        chunk += [chunk[-1]] * (prompts_per_batch - real)
        texts, tokens, mask = experience.encode_prompts(chunk, template, tokenizer, max_prompt_len)
        out = sampling.generate(
            params, tokens, mask, jax.random.fold_in(key, b), cfg=cfg, s=s, group_size=k
        )
        out = {n: np.asarray(v)[: real * k] for n, v in jax.device_get(out).items()}
        yield chunk[:real], texts[:real], out, experience.decode_completions(out, tokenizer)


def evaluate(
    params,
    cfg,
    tokenizer,
    examples,
    stack,
    *,
    template,
    s: sampling.SamplingConfig,
    k: int,
    prompts_per_batch: int,
    max_prompt_len: int,
    seed: int = 0,
):
    """Returns ({"pass@1", "completion_len", ...}, per-sample records)."""
    records = []
    for exs, texts, out, comps in generate_for(
        params,
        cfg,
        tokenizer,
        examples,
        template=template,
        s=s,
        k=k,
        prompts_per_batch=prompts_per_batch,
        max_prompt_len=max_prompt_len,
        key=jax.random.key(seed),
    ):
        prompts = [t for t in texts for _ in range(k)]
        res = stack(prompts, comps, experience.reward_fields(exs, k, out))
        for n, c in enumerate(comps):
            records.append(
                {
                    "id": exs[n // k].get("id"),
                    "sample": n % k,
                    "prompt": prompts[n],
                    "completion": c,
                    "correct": bool(res.correct[n]),
                    "reward": float(res.total[n]),
                    "length": int(out["length"][n]),
                    "truncated": bool(out["truncated"][n]),
                }
            )
    correct = np.array([r["correct"] for r in records], float)
    summary = {
        "pass@1": float(correct.mean()),
        "completion_len": float(np.mean([r["length"] for r in records])),
        "truncated_frac": float(np.mean([r["truncated"] for r in records])),
        "num_questions": len(examples),
        "k": k,
    }
    return summary, records
