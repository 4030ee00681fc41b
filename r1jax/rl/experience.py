"""GRPO's host-side data between the sampler and the update: training rows, group selection,
advantages and minibatches. Arrays are NumPy; rows are prompt-major (row n = prompt n // G).

In a multi-host job each process holds only its own rows (whole groups, in device-block order:
r1jax.update); nothing here communicates, except `advantages` with adv_scale="batch", whose
batch std is a global statistic (passed in).
"""

from __future__ import annotations

import numpy as np

from r1jax.rl import advantages


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


def group_advantages(total_N, rl_cfg, group_size: int, batch_std=None):
    return advantages.group_advantages(
        total_N,
        group_size,
        scale=rl_cfg.adv_scale,
        eps=rl_cfg.adv_eps,
        baseline=rl_cfg.adv_baseline,
        batch_std=batch_std,
    )


def minibatches(
    rows: dict, n_minibatches: int, blocks: range, num_blocks: int, rng: np.random.Generator
) -> list[dict]:
    """Splits one rollout's rows into minibatches without moving a row off its device.

    The rows are `num_blocks` equal device blocks (the mesh's batch shards), of which this
    process holds `blocks`. Each block's rows are shuffled (one permutation per block, drawn in
    block order from `rng` by every process, so the shuffle does not depend on the process
    count) and minibatch k takes the k-th slice of every block: the same minibatches at any
    process count, and no row crosses hosts.
    """
    n_local = len(rows["mask"])
    per_block = n_local // len(blocks)
    perms = [rng.permutation(per_block) for _ in range(num_blocks)]
    order = np.concatenate([j * per_block + perms[b] for j, b in enumerate(blocks)])
    parts = order.reshape(len(blocks), n_minibatches, per_block // n_minibatches)
    return [{k: v[parts[:, i].ravel()] for k, v in rows.items()} for i in range(n_minibatches)]
