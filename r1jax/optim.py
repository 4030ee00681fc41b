"""What every trainer here shares about optimisation: the optimizer built from config.optim
(its settings checked first), and the guarded update (one optax step that is skipped when the
loss, the gradient, the new parameters or the new optimizer state are not all finite, leaving
parameters and optimizer state unchanged; the caller logs and counts it)."""

from __future__ import annotations

import functools
import logging
import math

import jax
import jax.numpy as jnp
import optax

from r1jax.errors import ConfigError

log = logging.getLogger(__name__)
SCHEDULES = ("constant", "cosine", "linear")


def check_config(ocfg, where: str = "config.optim", steps: int = 0) -> None:
    """One-line errors naming the field, before anything is built. A learning rate that is
    finite but too large is left to the guard: no range would be right for every model.
    `steps`: the run's length when total_steps is 0 (0: unknown yet)."""

    def number(name, ok, rule):
        v = ocfg.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}.{name}={v!r}: must be a number")
        if not (math.isfinite(v) and ok(v)):
            raise ConfigError(f"{where}.{name}={v!r}: must be a finite number {rule}")

    number("lr", lambda v: v > 0, "> 0")
    number("b1", lambda v: 0 <= v < 1, "in [0, 1)")
    number("b2", lambda v: 0 <= v < 1, "in [0, 1)")
    number("eps", lambda v: v > 0, "> 0")
    number("weight_decay", lambda v: v >= 0, ">= 0")
    number("grad_clip", lambda v: v >= 0, ">= 0 (0: no clipping)")
    number("min_lr_ratio", lambda v: 0 <= v <= 1, "in [0, 1]")
    for name in ("warmup_steps", "total_steps"):
        v = ocfg.get(name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"{where}.{name}={v!r}: must be an integer >= 0")
    if ocfg.schedule not in SCHEDULES:
        raise ConfigError(f"{where}.schedule={ocfg.schedule!r}: one of {', '.join(SCHEDULES)}")
    total = ocfg.total_steps or steps
    if total and ocfg.warmup_steps > total:  # a legitimate smoke test, so not an error
        log.warning(
            "%s.warmup_steps=%d is more than the run's %d steps: the peak %s.lr is never reached",
            where,
            ocfg.warmup_steps,
            total,
            where,
        )


def make_optimizer(ocfg) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warmup, then a constant, cosine or linear schedule; global-norm clip."""
    check_config(ocfg)
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


def all_finite(tree) -> jax.Array:
    """Whether every float in `tree` is finite (a scalar bool; integer leaves always are)."""
    flags = [
        jnp.isfinite(x).all()
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.stack(flags).all() if flags else jnp.bool_(True)


def _decayed(params):
    """Weight decay on every parameter but an MoE router's balancing bias (not trained by
    gradients: models/moe.py update_router_bias moves it)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "router_bias" not in jax.tree_util.keystr(path), params
    )


def apply_if_finite(state: dict, grads, loss, optimizer) -> tuple[dict, dict]:
    """One update of state = {params, opt_state, step} by summed `grads`; it is skipped when the
    loss, the gradient norm, or any new parameter or optimizer-state value is not finite (finite
    gradients can still give NaN parameters: a huge learning rate, an overflowing moment).
    Returns (new_state, {grad_norm, skipped}), both inside jit."""
    params = state["params"]
    grad_norm = optax.global_norm(grads)
    updates, new_opt = optimizer.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    finite &= all_finite(new_params) & all_finite(new_opt)
    keep = functools.partial(jax.tree.map, lambda a, b: jnp.where(finite, a, b))
    new_state = {
        "params": keep(new_params, params),
        "opt_state": keep(new_opt, state["opt_state"]),
        "step": state["step"] + finite.astype(jnp.int32),
    }
    return new_state, {"grad_norm": grad_norm, "skipped": 1.0 - finite.astype(jnp.float32)}
