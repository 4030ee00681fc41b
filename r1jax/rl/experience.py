"""From a batch of questions to training minibatches: prompts, rollout, rewards, advantages.

Host-side glue between the sampler (device), the reward workers (host processes) and the
jitted update. Arrays here are NumPy; rows are prompt-major (row n = prompt n // G).
"""

from __future__ import annotations

import numpy as np

from r1jax import sampling
from r1jax.rl import advantages, losses


def encode_prompts(examples, template, tokenizer, max_prompt_len: int):
    """Prompt texts, and token ids left-padded to one bucketed length <= max_prompt_len."""
    texts = [template(ex) for ex in examples]
    ids = [tokenizer.encode(t, add_bos=True) for t in texts]
    longest = max(len(i) for i in ids)
    if longest > max_prompt_len:
        bad = next(ex for ex, i in zip(examples, ids) if len(i) == longest)
        raise ValueError(
            f"example {bad.get('id')!r}: prompt has {longest} tokens, more than "
            f"config.rollout.max_prompt_len={max_prompt_len}"
        )
    length = min(sampling.bucket(longest), max_prompt_len)
    tokens, mask = sampling.pad_prompts(ids, tokenizer.pad_id, length)
    return texts, tokens, mask


def decode_completions(out: dict, tokenizer) -> list[str]:
    """Completion texts without the ending EOS token."""
    texts = []
    eos = set(tokenizer.eos_ids)
    for toks, n in zip(out["tokens"], out["length"]):
        toks = [int(t) for t in toks[:n]]
        if toks and toks[-1] in eos:
            toks = toks[:-1]
        texts.append(tokenizer.decode(toks))
    return texts


def reward_fields(examples, group_size: int, out: dict) -> dict[str, list]:
    """Per-completion columns for the reward functions: every example field, repeated G times,
    plus completion_lens (tokens) and truncated."""
    keys = sorted({k for ex in examples for k in ex})
    fields = {k: [ex.get(k) for ex in examples for _ in range(group_size)] for k in keys}
    fields["completion_lens"] = [int(n) for n in out["length"]]
    fields["truncated"] = [bool(t) for t in out["truncated"]]
    return fields


def make_rows(prompt_tokens, prompt_mask, out: dict, group_size: int) -> dict[str, np.ndarray]:
    """Full training rows: [prompt ; completion] tokens with their attention and loss masks."""
    G = group_size
    return {
        "tokens": np.concatenate([np.repeat(prompt_tokens, G, 0), out["tokens"]], 1),
        "attn": np.concatenate([np.repeat(prompt_mask, G, 0), out["mask"]], 1).astype(np.int32),
        "mask": out["mask"].astype(np.int32),
        "sampler_logp": out["logp"].astype(np.float32),
    }


def select_groups(rows: dict, keep_groups: np.ndarray, group_size: int) -> dict:
    idx = (keep_groups[:, None] * group_size + np.arange(group_size)).ravel()
    return {k: v[idx] for k, v in rows.items()}


def compute_advantages(total_N, rl_cfg, group_size: int):
    return advantages.group_advantages(
        total_N,
        group_size,
        scale=rl_cfg.adv_scale,
        eps=rl_cfg.adv_eps,
        baseline=rl_cfg.adv_baseline,
    )


def minibatches(
    rows: dict,
    n_minibatches: int,
    loss_cfg: losses.LossConfig,
    max_len: int,
    rng: np.random.Generator,
    shuffle: bool = True,
) -> list[dict]:
    """Splits one rollout into minibatches (shuffled rows) with their loss weights.

    The weights hold the loss normaliser of each minibatch (its true sequence / token count),
    so micro-batching inside the update is exact.
    """
    n = len(rows["mask"])
    order = rng.permutation(n) if shuffle else np.arange(n)
    out = []
    for part in np.split(order, n_minibatches):
        mb = {k: v[part] for k, v in rows.items()}
        mb["weight"] = np.asarray(
            losses.token_weights(mb["mask"], loss_cfg.loss_type, max_len=max_len), np.float32
        )
        out.append(mb)
    return out
