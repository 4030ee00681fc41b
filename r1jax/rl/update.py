"""The jitted, sharded GRPO update and the log-prob scorer it relies on.

A training minibatch arrives from the host already split into micro-batches, as arrays of shape
[n_micro, micro, ...] sharded over the mesh's batch axes on the `micro` axis, so splitting never
moves data between devices. Per row (one completion):

  tokens  [S]  prompt (left-padded to P) followed by the completion (T tokens, right-padded)
  attn    [S]  1 on real tokens (prompt and completion), 0 on padding
  mask    [T]  1 on completion tokens that count in the loss
  weight  [T]  the loss normaliser of the whole minibatch (rl.losses.token_weights)
  adv     []   the advantage of the completion
  old_logp, ref_logp, sampler_logp  [T]  (old/ref optional; see below)

`train_step` scans over micro-batches, summing losses and gradients (exact: the weights already
hold the global normaliser), then applies one optax update. A non-finite loss or gradient skips
the update (parameters and optimizer state unchanged) and is reported in the metrics.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r1jax import optim
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig
from r1jax.rl import losses

f32 = jnp.float32


def completion_logprobs(
    params,
    batch,
    cfg: ModelConfig,
    *,
    prompt_len: int,
    temperature: float,
    vocab_chunk: int,
    with_entropy: bool = False,
):
    """log pi(completion token) [n, T] (and entropy) for one micro-batch of rows."""
    attn = batch["attn"]
    h = tfm.forward(params, batch["tokens"], tfm.positions_from_mask(attn), attn, cfg)
    # The hidden state at position s predicts token s+1: completions start at P.
    h = h[:, prompt_len - 1 : -1]
    return tfm.token_logprobs(
        params,
        h,
        batch["tokens"][:, prompt_len:],
        cfg,
        temperature=temperature,
        vocab_chunk=vocab_chunk,
        with_entropy=with_entropy,
    )


def make_scorer(
    cfg: ModelConfig,
    *,
    prompt_len: int,
    temperature: float,
    vocab_chunk: int,
    param_shardings,
    batch_shardings,
):
    """Jitted fn(params, batch [n_micro, micro, ...]) -> logp [n_micro, micro, T]."""

    def score(params, batch):
        def one(_, mb):
            lp, _ = completion_logprobs(
                params,
                mb,
                cfg,
                prompt_len=prompt_len,
                temperature=temperature,
                vocab_chunk=vocab_chunk,
            )
            return None, lp * mb["mask"]

        return jax.lax.scan(one, None, batch)[1]

    return jax.jit(
        score,
        in_shardings=(param_shardings, batch_shardings),
        out_shardings=batch_shardings["mask"],
    )


def _micro_loss(params, mb, cfg, loss_cfg, prompt_len, temperature, vocab_chunk):
    logp, ent = completion_logprobs(
        params,
        mb,
        cfg,
        prompt_len=prompt_len,
        temperature=temperature,
        vocab_chunk=vocab_chunk,
        with_entropy=True,
    )
    loss, metrics = losses.policy_loss(
        logp, mb.get("old_logp"), mb.get("ref_logp"), mb["adv"], mb["mask"], mb["weight"], loss_cfg
    )
    m = mb["mask"].astype(f32)
    metrics["entropy"] = ((jax.lax.stop_gradient(ent) * m).sum(), m.sum())
    gap = jnp.abs(jax.lax.stop_gradient(logp) - mb["sampler_logp"]) * m
    metrics["sampler_logp_gap"] = (gap.sum(), m.sum())
    metrics["sampler_logp_gap_max"] = (gap.max(), m.sum())
    return loss, metrics


def make_train_step(
    cfg: ModelConfig,
    loss_cfg: losses.LossConfig,
    optimizer,
    *,
    prompt_len: int,
    temperature: float,
    vocab_chunk: int,
    state_shardings,
    batch_shardings,
):
    """Jitted fn(state, batch) -> (state, metrics); `state` = {params, opt_state, step} is donated.

    metrics holds scalars: the loss-function metrics (finalised), entropy, grad_norm, and
    `skipped` (1.0 when the update was dropped for a non-finite loss or gradient).
    """
    grad_fn = jax.value_and_grad(
        functools.partial(
            _micro_loss,
            cfg=cfg,
            loss_cfg=loss_cfg,
            prompt_len=prompt_len,
            temperature=temperature,
            vocab_chunk=vocab_chunk,
        ),
        has_aux=True,
    )

    def step(state, batch):
        params = state["params"]

        def accumulate(grads, mb):
            (_, metrics), g = grad_fn(params, mb)
            return jax.tree.map(jnp.add, grads, g), metrics

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, f32), params)
        grads, metrics = jax.lax.scan(accumulate, zeros, batch)
        metrics = losses.finalize_metrics(metrics)
        new_state, m = optim.apply_if_finite(state, grads, metrics["loss"], optimizer)
        return new_state, {**metrics, **m}

    return jax.jit(
        step,
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, None),
        donate_argnums=(0,),
    )
