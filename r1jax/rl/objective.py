"""GRPO's objective on the model: the policy's log-probs of its completions (one function for
the policy, the reference and the old policy: models.transformer.target_logprobs) through a
policy loss of r1jax.rl.losses, and the batch-wide token weights that make micro-batching exact.
These are what the GRPO stage hands to the update builder (r1jax/update.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.models import transformer as tfm
from r1jax.rl import losses


def _completion_logprobs(params, mb, *, cfg, prompt_len, temperature, vocab_chunk, **kw):
    """Log-probs [B, T] of the completion tokens of micro-batch `mb` (and entropies, if asked)."""
    positions = tfm.positions_from_mask(mb["attn"])
    return tfm.target_logprobs(
        params, mb["tokens"], positions, mb["attn"], cfg, first=prompt_len,
        temperature=temperature, vocab_chunk=vocab_chunk, **kw,
    )  # fmt: skip


def grpo_loss(params, mb, ctx, *, policy_loss, loss_cfg, **model_kw):
    """One micro-batch's share of the GRPO loss, and its metrics (entropy, sampler gap).
    `model_kw`: cfg, prompt_len, temperature, vocab_chunk (see _completion_logprobs)."""
    del ctx
    logp, ent = _completion_logprobs(params, mb, with_entropy=True, **model_kw)
    loss, metrics = policy_loss(
        logp, mb.get("old_logp"), mb.get("ref_logp"), mb["adv"], mb["mask"], mb["weight"], loss_cfg
    )
    m = mb["mask"].astype(jnp.float32)
    metrics["entropy"] = ((jax.lax.stop_gradient(ent) * m).sum(), m.sum())
    gap = jnp.abs(jax.lax.stop_gradient(logp) - mb["sampler_logp"]) * m
    metrics["sampler_logp_gap"] = (gap.sum(), m.sum())
    metrics["sampler_logp_gap_max"] = (gap.max(), m.sum())
    return loss, metrics


def token_weights(batch, *, loss_type, max_len):
    """`prepare` for the update: the loss normaliser of the whole minibatch, per token."""
    mask = batch["mask"]
    w = losses.token_weights(mask.reshape(-1, mask.shape[-1]), loss_type, max_len=max_len)
    return {**batch, "weight": w.reshape(mask.shape)}, {}


def frozen_logprobs(params, mb, **model_kw):
    """Reference / old-policy log-probs of one micro-batch (masked)."""
    logp, _ = _completion_logprobs(params, mb, **model_kw)
    return logp * mb["mask"]
