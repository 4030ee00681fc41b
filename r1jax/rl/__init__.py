"""RL objectives: group-relative advantages and the GRPO-family policy losses."""

from r1jax.rl.advantages import group_advantages
from r1jax.rl.losses import (
    LossConfig,
    finalize_metrics,
    kl_estimate,
    loss_config_from,
    merge_metrics,
    policy_loss,
    token_weights,
)

__all__ = [
    "LossConfig",
    "finalize_metrics",
    "group_advantages",
    "kl_estimate",
    "loss_config_from",
    "merge_metrics",
    "policy_loss",
    "token_weights",
]
