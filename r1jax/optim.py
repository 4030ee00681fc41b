"""What every trainer here shares about optimisation: the optimizer built from config.optim, and
the guarded update (one optax step that is skipped when the loss or the gradient is not finite,
leaving parameters and optimizer state unchanged; the caller logs and counts it)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax


def make_optimizer(ocfg) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warmup, then a constant, cosine or linear schedule; global-norm clip."""
    lr, warmup, total = float(ocfg.lr), int(ocfg.warmup_steps), int(ocfg.total_steps)
    decay = max(total - warmup, 1)
    end = lr * float(ocfg.get("min_lr_ratio", 0.0))
    if ocfg.schedule == "constant":
        after = optax.constant_schedule(lr)
    elif ocfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, decay, alpha=end / lr if lr else 0.0)
    elif ocfg.schedule == "linear":
        after = optax.linear_schedule(lr, end, decay)
    else:
        raise ValueError(f"config.optim.schedule={ocfg.schedule!r}: constant, cosine or linear")
    sched = (
        optax.join_schedules(
            [optax.linear_schedule(lr / (warmup + 1), lr, warmup), after], [warmup]
        )
        if warmup
        else after
    )
    tx = optax.adamw(
        sched,
        b1=ocfg.b1,
        b2=ocfg.b2,
        eps=ocfg.eps,
        weight_decay=ocfg.weight_decay,
        mask=_decayed if ocfg.weight_decay else None,
    )
    if ocfg.grad_clip:
        tx = optax.chain(optax.clip_by_global_norm(ocfg.grad_clip), tx)
    return tx, sched


def _decayed(params):
    """Weight decay on every parameter but an MoE router's balancing bias (not trained by
    gradients: models/moe.py update_router_bias moves it)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "router_bias" not in jax.tree_util.keystr(path), params
    )


def apply_if_finite(state: dict, grads, loss, optimizer) -> tuple[dict, dict]:
    """One update of state = {params, opt_state, step} by summed `grads`; a non-finite `loss` or
    gradient norm skips it. Returns (new_state, {grad_norm, skipped}), both inside jit."""
    params = state["params"]
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = optimizer.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    keep = functools.partial(jax.tree.map, lambda a, b: jnp.where(finite, a, b))
    new_state = {
        "params": keep(new_params, params),
        "opt_state": keep(new_opt, state["opt_state"]),
        "step": state["step"] + finite.astype(jnp.int32),
    }
    return new_state, {"grad_norm": grad_norm, "skipped": 1.0 - finite.astype(jnp.float32)}
