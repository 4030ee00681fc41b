"""GRPO's objective on the model: the policy's log-probs of its completions (one function for
the policy, the reference and the old policy: models.transformer.target_logprobs) through a
policy loss of r1jax.rl.losses, and the batch-wide token weights that make micro-batching exact.
These are what the GRPO stage hands to the update builder (r1jax/update.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.models import moe
from r1jax.models import transformer as tfm
from r1jax.rl import losses


def _completion_logprobs(params, mb, *, cfg, prompt_len, temperature, vocab_chunk, **kw):
    """Log-probs [B, T] of the completion tokens of micro-batch `mb` (and entropies, if asked)."""
    positions = tfm.positions_from_mask(mb["attn"])
    return tfm.target_logprobs(
        params, mb["tokens"], positions, mb["attn"], cfg, first=prompt_len,
        temperature=temperature, vocab_chunk=vocab_chunk, **kw,
    )  # fmt: skip


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
    loss, pl_metrics = policy_loss(
        logp, mb.get("old_logp"), mb.get("ref_logp"), mb["adv"], mb["mask"], mb["weight"], loss_cfg
    )
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


def token_weights(batch, *, loss_type, max_len):
    """`prepare` for the update: the loss normaliser of the whole minibatch, per token."""
    mask = batch["mask"]
    w = losses.token_weights(mask.reshape(-1, mask.shape[-1]), loss_type, max_len=max_len)
    row_weight = jnp.full(
        mask.shape[:-1], 1.0 / (mask.shape[0] * mask.shape[1])
    )  # [n_micro, micro]
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
