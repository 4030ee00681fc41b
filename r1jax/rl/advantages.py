"""Group-relative advantages for GRPO-family training (outcome rewards, one scalar per completion).

Rewards arrive as a flat `rewards_N` with the G completions of each prompt contiguous
(N = B*G). A NaN reward means "no reward" (a verifier returned None, timed out, ...): such items
are excluded from their group's statistics and get advantage exactly 0, as in TRL.

Conventions (and why):
- Std is the *unbiased* sample std (ddof=1, Bessel-corrected), as in TRL (`nanstd`), verl
  (`torch.std`) and Tunix (`ddof=1`), so values match TRL's formula. With ddof=1 a
  group needs >= 2 valid rewards; a group with fewer has no signal and gets advantage 0.
- eps = 1e-4 is added to the std (TRL's value; verl uses 1e-6). With binary rewards the smallest
  non-zero group std is ~0.25 for G=16, so eps only guards the division; it never changes the sign.
- A group whose valid rewards are all equal has no learning signal: its advantages are set to
  exactly 0 (detected with max == min, not std < tol, so rounding in the mean cannot leak a
  1e-5-sized advantage out of the eps division).
- scale: "group" divides by the group std (GRPO); "batch" by the std of all valid rewards in the
  batch (TRL's `scale_rewards="batch"`, the mean stays per group); "none" does not divide
  (Dr. GRPO). baseline: "mean" is the group mean; "loo" is the leave-one-out mean of the *other*
  valid rewards of the group (RLOO), b_i = (S - r_i) / (n - 1).

One implementation serves both host NumPy (the normal use: it runs between rollout and update,
on rewards computed by Python verifiers) and jax.numpy (inside jit): the array namespace follows
the input type.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SCALES = ("group", "batch", "none")
BASELINES = ("mean", "loo")


def _xp(x):
    return jnp if isinstance(x, jax.Array) else np


def group_advantages(
    rewards_N,
    group_size: int,
    *,
    scale: str = "group",
    eps: float = 1e-4,
    baseline: str = "mean",
    valid_N=None,
    batch_std=None,
):
    """Returns (adv_N float32, stats) for rewards with the G samples of a prompt contiguous.

    Args:
      rewards_N: [N] rewards; NaN marks an invalid item (excluded, advantage 0).
      group_size: G; N must be a multiple of it.
      scale: "group" | "batch" | "none" (see module docstring).
      eps: added to the std before dividing.
      baseline: "mean" | "loo".
      valid_N: optional [N] bool; False also marks an item invalid.
      batch_std: for scale="batch", the std of the whole batch when these rewards are only a
        part of it (each host of a multi-host job holds its own groups); default: their own.

    stats (scalars, same array type as the input): frac_zero_std (fraction of groups with no
    reward spread among valid items, i.e. no learning signal; includes groups with < 2 valid
    items), frac_valid, reward_mean and reward_std (ddof=1) over valid items.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    xp = _xp(rewards_N)
    r = xp.asarray(rewards_N, dtype=xp.float32)
    if r.ndim != 1 or r.shape[0] % group_size:
        raise ValueError(
            f"rewards_N must be 1-D with length a multiple of group_size={group_size}, "
            f"got shape {tuple(r.shape)}"
        )
    valid = ~xp.isnan(r)
    if valid_N is not None:
        valid_N = xp.asarray(valid_N, dtype=bool)
        if tuple(valid_N.shape) != tuple(r.shape):
            raise ValueError(f"valid_N shape {tuple(valid_N.shape)} != rewards_N {tuple(r.shape)}")
        valid = valid & valid_N

    r_BG = xp.where(valid, r, 0.0).reshape(-1, group_size)
    v_BG = valid.reshape(-1, group_size)
    n_B = v_BG.sum(-1).astype(xp.float32)
    sum_B = r_BG.sum(-1)
    mean_B = sum_B / xp.maximum(n_B, 1.0)
    dev_BG = xp.where(v_BG, r_BG - mean_B[:, None], 0.0)
    std_B = xp.sqrt((dev_BG**2).sum(-1) / xp.maximum(n_B - 1.0, 1.0))
    # Exact "no spread" test: max == min over the valid items (or fewer than two valid items).
    hi_B = xp.where(v_BG, r_BG, -xp.inf).max(-1)
    lo_B = xp.where(v_BG, r_BG, xp.inf).min(-1)
    flat_B = (hi_B == lo_B) | (n_B < 2)

    if baseline == "mean":
        centred_BG = dev_BG
    else:
        loo_BG = (sum_B[:, None] - r_BG) / xp.maximum(n_B[:, None] - 1.0, 1.0)
        centred_BG = r_BG - loo_BG

    n_all = valid.sum().astype(xp.float32)
    mean_all = xp.where(valid, r, 0.0).sum() / xp.maximum(n_all, 1.0)
    var_all = (xp.where(valid, r - mean_all, 0.0) ** 2).sum() / xp.maximum(n_all - 1.0, 1.0)
    std_all = xp.sqrt(var_all) if batch_std is None else xp.asarray(batch_std, xp.float32)

    if scale == "group":
        adv_BG = centred_BG / (std_B[:, None] + eps)
    elif scale == "batch":
        adv_BG = centred_BG / (std_all + eps)
    else:
        adv_BG = centred_BG
    adv_BG = xp.where(v_BG & ~flat_B[:, None], adv_BG, 0.0)
    adv_N = adv_BG.reshape(-1).astype(xp.float32)

    stats = {
        "frac_zero_std": flat_B.astype(xp.float32).mean(),
        "frac_valid": valid.astype(xp.float32).mean(),
        "reward_mean": mean_all,
        "reward_std": std_all,
    }
    return adv_N, stats
