"""Rule-based verifiable rewards (R1 / R1-Zero / DAPO / TinyZero) and their evaluation machinery.

Every reward function is `fn(prompts, completions, **fields) -> list[float | None]`; `fields` are
per-item lists (dataset columns such as `answer`, `nums`, `target`, `tests`, plus `completion_lens`
and `truncated` from the trainer), and unknown ones are ignored. None means "cannot be judged"
(e.g. the gold answer does not parse): it is counted and excluded from the advantage, never 0.

    stack = RewardStack([("math", 1.0), ("format", 1.0)], pool=RewardPool(workers=8))
    result = stack(prompts, completions, {"answer": answers, "completion_lens": lens})
    result.total, result.per_fn["math"], result.correct, result.counters

Modules: math, format, countdown, language, code (sandboxed execution), overlong (DAPO length
penalty), pool (worker processes with hard timeouts), registry (names), stack (weighted sum).
Reward modules are imported lazily by name, so pool workers only import what they use.
"""

from r1jax.rewards.pool import Outcome, RewardPool, Task
from r1jax.rewards.registry import ACCURACY_FNS, REGISTRY, get_reward_fn
from r1jax.rewards.stack import RewardResult, RewardSpec, RewardStack

__all__ = [
    "ACCURACY_FNS",
    "REGISTRY",
    "Outcome",
    "RewardPool",
    "RewardResult",
    "RewardSpec",
    "RewardStack",
    "Task",
    "get_reward_fn",
]
