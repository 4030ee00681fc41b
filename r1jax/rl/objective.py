"""GRPO's objective on the model: the policy's log-probs of its completions (one function for
the policy, the reference and the old policy: models.transformer.target_logprobs) through a
policy loss of r1jax.rl.losses, and the batch-wide token weights that make micro-batching exact.
These are what the GRPO stage hands to the update builder (r1jax/update.py).

A micro-batch is padded rows ([prompt ; completion], `attn`, loss side [n, T]) or packed rows
(r1jax.rl.experience.pack: `segment_ids`, `positions`, loss side [n, row_len - 1] with each
completion token's segment id in `seg`); the same loss runs on both.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from r1jax.models import moe
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


def grpo_loss(
    params, mb, ctx, *, policy_loss, loss_cfg, routing_replay=False, router_aux_coef=0.0, **model_kw
):
    """One micro-batch's share of the GRPO loss, and its metrics (entropy, sampler gap).
    `model_kw`: cfg, prompt_len, temperature, vocab_chunk (see _completion_logprobs).
    MoE: mb["experts"] [B,L_moe,S,k] (the rollout's choices, `rollout_experts`) are replayed if
    routing_replay, and their disagreement with the current router is reported either way;
    router_aux_coef > 0 adds DeepSeek-V3's sequence-wise balance loss (mean over rows, summed
    over MoE layers) times it."""
    del ctx
    if model_kw["cfg"].n_experts:
        logp, ent, metrics = _moe_logprobs(params, mb, routing_replay, model_kw)
    else:
        logp, ent = _completion_logprobs(params, mb, with_entropy=True, **model_kw)
        metrics = {}
    extra = {}  # only what is needed, so that a user's policy_loss need not take these
    if "seg" in mb:
        extra["segment_ids_NT"] = mb["seg"]
    if losses.loss_config_from(loss_cfg).is_correction != "none":
        extra["sampler_logp_NT"] = mb["sampler_logp"]
    loss, pl_metrics = policy_loss(
        logp, mb.get("old_logp"), mb.get("ref_logp"), mb["adv"], mb["mask"], mb["weight"],
        loss_cfg, **extra,
    )  # fmt: skip
    metrics = {**pl_metrics, **metrics}
    balance = metrics.pop("moe_balance_loss_N", None)  # [B]
    if router_aux_coef and balance is not None:  # a mean over the whole batch's rows
        loss = loss + router_aux_coef * jnp.sum(balance * mb["row_weight"])
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
    # MoE balance loss: a mean over the rows of the whole batch, [n_micro, micro].
    row_weight = jnp.full(mask.shape[:-1], 1.0 / math.prod(mask.shape[:-1]))
    return {**batch, "weight": w.reshape(mask.shape), "row_weight": row_weight}, {}


def frozen_logprobs(params, mb, **model_kw):
    """Reference / old-policy log-probs of one micro-batch (masked)."""
    logp, _ = _completion_logprobs(params, mb, **model_kw)
    return logp * mb["mask"]


def _moe_logprobs(params, mb, replay: bool, model_kw):
    """Log-probs, entropies and router metrics {name: (num, den)} of a MoE policy."""
    experts = mb.get("experts")  # [B,L,S,k] from the rollout
    layers_first = None if experts is None else experts.transpose(1, 0, 2, 3)
    logp, ent, routing = _completion_logprobs(
        params, mb, with_entropy=True, return_routing=True,
        replay=layers_first if replay else None, **model_kw,
    )  # fmt: skip
    load = routing["load"]  # [L,E]
    balance = routing["balance_loss_N"].sum(0)  # [B], summed over MoE layers
    metrics = {
        "moe_balance_loss": (balance.sum(), jnp.float32(balance.shape[0])),
        "moe_balance_loss_N": balance,  # popped by grpo_loss
        "moe_load_per_expert": (load, jnp.ones(())),  # for the balancing bias (update.py)
        "moe_router_entropy": (routing["entropy"].sum(), routing["tokens"].sum()),
        "moe_dropped": (routing["dropped"].sum(), load.sum()),
        # max over layers of the busiest expert's share times E (1.0 = perfectly balanced)
        "moe_max_load_max": (
            (load.max(-1) / jnp.maximum(load.sum(-1), 1.0)).max() * load.shape[-1],
            jnp.ones(()),
        ),
    }
    if experts is not None:
        valid = jnp.broadcast_to(mb["attn"][None] != 0, layers_first.shape[:3])
        rate = moe.disagreement(layers_first, routing["router_experts"], valid)
        n = valid.sum() * experts.shape[-1]
        metrics["routing_disagreement"] = (rate * n, n.astype(jnp.float32))
    return logp, ent, metrics


def rollout_experts(params, mb, **model_kw):
    """The expert choices [B,L_moe,S,k] of the rollout policy on its own sequences, recorded
    for routing replay (a make_scorer fn, run with the sampler's parameters)."""
    positions = tfm.positions_from_mask(mb["attn"])
    _, routing = tfm.forward(
        params, mb["tokens"], positions, mb["attn"], model_kw["cfg"], return_routing=True
    )
    return routing["experts"].transpose(1, 0, 2, 3)
