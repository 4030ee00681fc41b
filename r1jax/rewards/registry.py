"""Reward functions by name, so that worker processes can rebuild them from (name, kwargs).

A name is a registry key (REGISTRY) or "package.module:attribute" for a user function. The target
is a function `fn(prompts, completions, *, <config>, **fields)`, whose keyword-only parameters are
its configuration (bound here, checked against the signature), or a class whose constructor takes
the configuration and whose instances are such functions. Every reward function must take
**fields, because the trainer passes all dataset columns plus `completion_lens` and `truncated`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from r1jax import registry

RewardFn = Callable[..., list]

# name -> ("module:attribute", default kwargs)
REGISTRY: dict[str, tuple[str, dict[str, Any]]] = {
    "math": ("r1jax.rewards.math:math_accuracy", {}),
    "math_dapo": ("r1jax.rewards.math:math_accuracy", {"correct_value": 1.0, "wrong_value": -1.0}),
    "format": ("r1jax.rewards.format:format_reward", {"strict": True}),
    "format_lenient": ("r1jax.rewards.format:format_reward", {"strict": False}),
    "countdown": ("r1jax.rewards.countdown:countdown_reward", {}),
    "language": ("r1jax.rewards.language:language_consistency", {}),
    "code": ("r1jax.rewards.code:CodeReward", {}),
    "overlong": ("r1jax.rewards.overlong:OverlongPenalty", {}),
    "reward_model": ("r1jax.rewards.reward_model:RewardModelReward", {}),
}
# Task-accuracy rewards: RewardStack takes `correct` from the one that is configured.
ACCURACY_FNS = frozenset({"math", "math_dapo", "countdown", "code"})


def spec_key(name: str, kwargs: Mapping[str, Any]) -> str:
    """Cache key of a built reward function."""
    return f"{name}|{sorted(kwargs.items())!r}"


def _resolve(name: str) -> tuple[Any, dict[str, Any]]:
    if name in REGISTRY:
        path, defaults = REGISTRY[name]
    elif ":" in name:
        path, defaults = name, {}
    else:
        raise ValueError(
            f"unknown reward {name!r}; known: {sorted(REGISTRY)}, or give 'package.module:function'"
        )
    return registry.load(path, f"reward {name!r}"), dict(defaults)


def _bind(fn: Callable, name: str, cfg: dict[str, Any]) -> RewardFn:
    params = inspect.signature(fn).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        raise TypeError(
            f"reward {name!r} must accept **fields (per-item columns, unknown ones too)"
        )
    options = {p.name: p for p in params if p.kind is p.KEYWORD_ONLY}
    unknown = sorted(set(cfg) - set(options))
    if unknown:
        raise TypeError(f"reward {name!r} has no option(s) {unknown}; options: {sorted(options)}")
    missing = [k for k, p in options.items() if p.default is p.empty and k not in cfg]
    if missing:
        raise TypeError(f"reward {name!r} needs option(s) {missing}")
    return functools.partial(fn, **cfg) if cfg else fn


def get_reward_fn(name: str, **kwargs) -> RewardFn:
    """The reward function called `name`, configured with `kwargs` (checked here)."""
    target, cfg = _resolve(name)
    cfg.update(kwargs)
    if inspect.isclass(target):
        try:
            return target(**cfg)
        except TypeError as e:
            raise TypeError(f"reward {name!r}: {e}") from e
    return _bind(target, name, cfg)
