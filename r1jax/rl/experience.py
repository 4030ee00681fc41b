"""GRPO's host-side data between the sampler and the update: training rows, group selection,
advantages and minibatches. Arrays are NumPy; rows are prompt-major (row n = prompt n // G).

In a multi-host job each process holds only its own rows (whole groups, in device-block order:
r1jax.update); only `batch_std` and `rollout_metrics` communicate: they sum a few numbers over
every host's rows, so the metrics are those of the whole batch.
"""

from __future__ import annotations

import numpy as np

from r1jax import distributed
from r1jax.data import packing
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


def pack(rows: dict, row_len: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Training rows (`make_rows`: [N, P + T] left-padded prompts, [N, T] completions) packed
    into rows of `row_len` tokens, and the index that `unpack` reads them back with.

    Each completion with its prompt's real tokens is one segment (first-fit decreasing:
    data.packing.assign_rows); model inputs tokens / segment_ids / positions are [R, row_len]
    as SFT packs them (positions restart at 0 per segment, so a packed row computes what the
    padded rows compute). The loss side is [R, row_len - 1], aligned with the model's
    next-token log-probs (column j scores token j + 1): `mask`, `seg` (the segment id of each
    completion token, 0 elsewhere) and every other [N, T] row (sampler_logp, old_logp,
    ref_logp) at its completion tokens; `adv` ([N]) on each of its completion tokens.
    """
    P = rows["tokens"].shape[1] - rows["mask"].shape[1]
    p_len, c_len = rows["attn"][:, :P].sum(1), rows["attn"][:, P:].sum(1)
    if (p_len == 0).any():
        raise ValueError(
            f"row {int(np.argmin(p_len))}: an empty prompt (its first token is unscored)"
        )
    row, offset, n_rows = packing.assign_rows(p_len + c_len, row_len, first_fit=True)
    start = offset + p_len - 1  # loss column of the first completion token
    out = {k: np.zeros((n_rows, row_len), np.int32) for k in ("tokens", "segment_ids", "positions")}
    out["seg"] = np.zeros((n_rows, row_len - 1), np.int32)
    per_token = [k for k, v in rows.items() if k not in ("tokens", "attn") and v.ndim == 2]
    per_seq = [k for k, v in rows.items() if v.ndim == 1]
    for k in per_token + per_seq:
        out[k] = np.zeros((n_rows, row_len - 1), rows[k].dtype)
    for i in np.argsort(row * row_len + offset, kind="stable"):  # segments in row order
        r, o, p, c = row[i], offset[i], p_len[i], c_len[i]
        seg = out["segment_ids"][r, o - 1] + 1 if o else 1
        out["tokens"][r, o : o + p + c] = rows["tokens"][i, P - p : P + c]
        out["segment_ids"][r, o : o + p + c] = seg
        out["positions"][r, o : o + p + c] = np.arange(p + c)
        cols = slice(start[i], start[i] + c)
        out["seg"][r, cols] = seg
        for k in per_token:
            out[k][r, cols] = rows[k][i, :c]
        for k in per_seq:
            out[k][r, cols] = rows[k][i]
    return out, {"row": row, "start": start, "length": c_len}


def unpack(packed_RJ: np.ndarray, index: dict, T: int) -> np.ndarray:
    """[N, T] rows (zero after each completion) of a [R, row_len - 1] packed loss-side array."""
    out = np.zeros((len(index["row"]), T), packed_RJ.dtype)
    for i, (r, s, c) in enumerate(zip(index["row"], index["start"], index["length"])):
        out[i, :c] = packed_RJ[r, s : s + c]
    return out


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


def batch_std(total_N) -> float:
    """The std (ddof=1) of every host's valid rewards: adv_scale="batch"'s divisor."""
    ok = np.isfinite(total_N)
    s = distributed.all_sum({"n": ok.sum(), "sum": np.where(ok, total_N, 0).sum()})
    mean = s["sum"] / max(s["n"], 1)
    sq = distributed.all_sum({"sq": np.where(ok, (total_N - mean) ** 2, 0).sum()})["sq"]
    return float(np.sqrt(sq / max(s["n"] - 1, 1)))


def rollout_metrics(exp: dict, adv_stats: dict, group_size: int) -> dict:
    """train/* and rewards/* of a rollout: sums over every host's rows over global counts
    (reward mean/std over judged completions; a reward function's mean over the items it
    judged, NaN if none; fault counters summed). Also "tokens": the completion tokens."""
    total, ok = exp["total"], np.isfinite(exp["total"])
    lengths = exp["mask"].sum(1)
    groups = len(total) // group_size
    sums = {
        "n": len(total),
        "n_ok": ok.sum(),
        "reward": np.where(ok, total, 0).sum(),
        "correct": exp["correct"].sum(),
        "length": lengths.sum(),
        "truncated": exp["truncated"].sum(),
        "groups": groups,
        "flat": float(adv_stats["frac_zero_std"]) * groups,
    }
    rewards = sorted(k for k in exp if k.startswith("reward/"))
    for k in rewards:
        v = exp[k]
        sums[f"{k}/sum"] = np.where(np.isfinite(v), v, 0).sum()
        sums[f"{k}/n"] = np.isfinite(v).sum()
    for name, v in exp["counters"].items():
        sums[f"count/{name}"] = v
    g = distributed.all_sum(sums)
    mean = g["reward"] / g["n_ok"] if g["n_ok"] else float("nan")
    sq = distributed.all_sum({"sq": np.where(ok, (total - mean) ** 2, 0).sum()})["sq"]
    m = {
        "train/reward": mean,
        "train/reward_std": float(np.sqrt(sq / g["n_ok"])) if g["n_ok"] else float("nan"),
        "train/accuracy": g["correct"] / g["n"],
        "train/completion_len": g["length"] / g["n"],
        "train/truncated_frac": g["truncated"] / g["n"],
        "train/frac_zero_std": g["flat"] / g["groups"],
        "tokens": g["length"],
    }
    for k in rewards:
        n = g[f"{k}/n"]
        m["rewards/" + k[7:]] = g[f"{k}/sum"] / n if n else float("nan")
    for name in exp["counters"]:
        m[f"rewards/count/{name}"] = float(g[f"count/{name}"])
    return m


def sample_rows(exp: dict, n: int) -> list[dict]:
    """The first n completions of this host's rollout, for samples.jsonl."""
    rows = []
    for i in range(min(n, len(exp["prompt"]))):
        row = {
            "prompt": exp["prompt"][i],
            "completion": exp["completion"][i],
            "reward": float(exp["total"][i]),
            "correct": bool(exp["correct"][i]),
            "advantage": float(exp["adv"][i]),
        }
        row.update({k: float(v[i]) for k, v in exp.items() if k.startswith("reward/")})
        rows.append(row)
    return rows
