"""GRPO's objective on the model: the policy's log-probs of its completions (one function for
the policy, the reference and the old policy: models.transformer.target_logprobs) through a
policy loss of r1jax.rl.losses, and the batch-wide token weights that make micro-batching exact.
These are what the GRPO stage hands to the update builder (r1jax/update.py).

A micro-batch is padded rows ([prompt ; completion], `attn`, loss side [n, T]) or packed rows
(r1jax.rl.experience.pack: `segment_ids`, `positions`, loss side [n, row_len - 1] with each
completion token's segment id in `seg`); the same loss runs on both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.models import transformer as tfm
from r1jax.rl import losses


def _completion_logprobs(params, mb, *, cfg, prompt_len, temperature, vocab_chunk, **kw):
    """Log-probs [B, T] of the completion tokens of micro-batch `mb` (and entropies, if asked);
    packed rows: of every token after the first, [B, row_len - 1]."""
    if "segment_ids" in mb:
        args, first = (mb["tokens"], mb["positions"], mb["segment_ids"]), 1
    else:
        args = (mb["tokens"], tfm.positions_from_mask(mb["attn"]), mb["attn"])
        first = prompt_len
    return tfm.target_logprobs(
        params, *args, cfg, first=first, temperature=temperature, vocab_chunk=vocab_chunk, **kw
    )


def grpo_loss(params, mb, ctx, *, policy_loss, loss_cfg, **model_kw):
    """One micro-batch's share of the GRPO loss, and its metrics (entropy, sampler gap).
    `model_kw`: cfg, prompt_len, temperature, vocab_chunk (see _completion_logprobs)."""
    del ctx
    logp, ent = _completion_logprobs(params, mb, with_entropy=True, **model_kw)
    extra = {}  # only what is needed, so that a user's policy_loss need not take these
    if "seg" in mb:
        extra["segment_ids_NT"] = mb["seg"]
    if losses.loss_config_from(loss_cfg).is_correction != "none":
        extra["sampler_logp_NT"] = mb["sampler_logp"]
    loss, metrics = policy_loss(
        logp, mb.get("old_logp"), mb.get("ref_logp"), mb["adv"], mb["mask"], mb["weight"],
        loss_cfg, **extra,
    )  # fmt: skip
    m = mb["mask"].astype(jnp.float32)
    metrics["entropy"] = ((jax.lax.stop_gradient(ent) * m).sum(), m.sum())
    gap = jnp.abs(jax.lax.stop_gradient(logp) - mb["sampler_logp"]) * m
    metrics["sampler_logp_gap"] = (gap.sum(), m.sum())
    metrics["sampler_logp_gap_max"] = (gap.max(), m.sum())
    return loss, metrics


def token_weights(batch, *, loss_type, max_len, num_sequences=None):
    """`prepare` for the update: the loss normaliser of the whole minibatch, per token.
    Packed rows need num_sequences (the minibatch's completions)."""
    mask = batch["mask"]
    flat = (lambda a: a.reshape(-1, a.shape[-1])) if mask.ndim > 1 else (lambda a: a)
    seg = flat(batch["seg"]) if "seg" in batch else None
    if seg is not None and num_sequences is None:
        raise ValueError("token_weights: packed rows need num_sequences")
    w = losses.token_weights(
        flat(mask), loss_type, max_len=max_len, num_sequences=num_sequences, segment_ids_NT=seg
    )
    return {**batch, "weight": w.reshape(mask.shape)}, {}


def frozen_logprobs(params, mb, **model_kw):
    """Reference / old-policy log-probs of one micro-batch (masked)."""
    logp, _ = _completion_logprobs(params, mb, **model_kw)
    return logp * mb["mask"]
