"""Configuration errors, caught before anything is compiled or allocated, naming the field."""

from __future__ import annotations

from r1jax import sharding as shd
from r1jax.rewards.registry import get_reward_fn
from r1jax.rl import losses

# Fields a resumed run may change (schedule of logging, length of the run); anything else
# changing between a checkpoint and its resumption is an error.
RESUMABLE_CHANGES = (
    "steps",
    "log_every",
    "eval_every",
    "ckpt_every",
    "samples_every",
    "num_samples_logged",
    "reward_workers",
    "reward_timeout_s",
    "eval",
    "mesh",
    "optim.total_steps",
)


class ConfigError(ValueError):
    pass


def _need(cond: bool, field: str, msg: str):
    if not cond:
        raise ConfigError(f"config.{field}: {msg}")


def validate(c, mesh=None) -> None:
    """Static checks; with a mesh, also that batches split over its batch axes."""
    r, rl = c.rollout, c.rl
    B, G = r.num_prompts, r.group_size
    _need(B > 0, "rollout.num_prompts", f"must be positive, got {B}")
    _need(G >= 2, "rollout.group_size", f"GRPO needs >= 2 samples per prompt, got {G}")
    _need(r.max_new_tokens > 0, "rollout.max_new_tokens", "must be positive")
    N = B * G
    _need(
        rl.num_minibatches > 0 and N % rl.num_minibatches == 0,
        "rl.num_minibatches",
        f"{rl.num_minibatches} does not divide the rollout of {B} x {G} = {N} completions",
    )
    M = N // rl.num_minibatches
    _need(
        rl.micro_batch > 0 and M % rl.micro_batch == 0,
        "rl.micro_batch",
        f"{rl.micro_batch} does not divide the minibatch of {M} completions "
        f"({N} / rl.num_minibatches={rl.num_minibatches})",
    )
    _need(rl.num_epochs >= 1, "rl.num_epochs", "must be >= 1")
    _need(rl.max_gen_batches >= 1, "rl.max_gen_batches", "must be >= 1")
    _need(rl.ref_reset_every >= 0, "rl.ref_reset_every", "must be >= 0 (0: never)")
    try:
        losses.loss_config_from(rl)
    except ValueError as e:
        raise ConfigError(f"config.rl: {e}") from None
    _need(len(c.rewards) > 0, "rewards", "configure at least one reward function")
    for label, spec in c.rewards.items():
        _need("name" in spec, f"rewards.{label}", "needs a `name`")
        try:
            get_reward_fn(spec.name, **dict(spec.get("kwargs", {}) or {}))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"config.rewards.{label}: {e}") from None
    for label in c.get("reward_weights", {}) or {}:
        _need(
            label in c.rewards,
            f"reward_weights.{label}",
            f"a weight for a reward that is not configured; configured: {list(c.rewards)}",
        )
    e = c.eval
    _need(e.k >= 1 and e.prompts_per_batch >= 1, "eval", "k and prompts_per_batch must be >= 1")
    for f in ("steps", "log_every", "ckpt_every"):
        _need(c[f] >= 1, f, "must be >= 1")
    if mesh is not None:
        d = shd.batch_divisor(mesh)
        _need(
            rl.micro_batch % d == 0,
            "rl.micro_batch",
            f"{rl.micro_batch} rows do not split over the mesh's {d} batch shards "
            f"(config.mesh={list(map(tuple, c.mesh))})",
        )


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume(saved: dict, current: dict) -> None:
    """A run resumed with a different config would silently mix two experiments: refuse."""
    if not saved:
        return
    a, b = _flatten(saved), _flatten(current)
    changed = sorted(
        k
        for k in set(a) | set(b)
        if a.get(k) != b.get(k)
        and not any(k == p or k.startswith(p + ".") for p in RESUMABLE_CHANGES)
    )
    if changed:
        diff = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed[:8])
        raise ConfigError(
            f"the checkpoint in this workdir was made with a different config ({diff}); use a "
            "new --workdir, or restore the old values"
        )
