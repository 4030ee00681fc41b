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


def grpo_loss(params, mb, ctx, *, cfg, loss_cfg, policy_loss, prompt_len, temperature, vocab_chunk):
    """One micro-batch's share of the GRPO loss, and its metrics (entropy, sampler gap)."""
    del ctx
    logp, ent = tfm.target_logprobs(
        params,
        mb["tokens"],
        tfm.positions_from_mask(mb["attn"]),
        mb["attn"],
        cfg,
        first=prompt_len,
        temperature=temperature,
        vocab_chunk=vocab_chunk,
        with_entropy=True,
    )
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


def frozen_logprobs(params, mb, *, cfg, prompt_len, temperature, vocab_chunk):
    """Reference / old-policy log-probs of one micro-batch (masked)."""
    logp, _ = tfm.target_logprobs(
        params,
        mb["tokens"],
        tfm.positions_from_mask(mb["attn"]),
        mb["attn"],
        cfg,
        first=prompt_len,
        temperature=temperature,
        vocab_chunk=vocab_chunk,
    )
    return logp * mb["mask"]
