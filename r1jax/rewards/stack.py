"""RewardStack: a weighted sum of named reward functions, evaluated through a RewardPool.

R1's rule reward is accuracy + format with equal weights; stage-2 adds language consistency;
DAPO adds the soft overlong penalty. None ("cannot be judged") becomes NaN: in `per_fn` for that
function, and in `total` for that item, which the advantage code must then exclude. Components
with weight 0 are computed and reported but left out of `total` (for logging-only rewards).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from r1jax.rewards.pool import Outcome, RewardPool, Task, default_pool
from r1jax.rewards.registry import ACCURACY_FNS, get_reward_fn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardSpec:
    """One component. `label` names it in results (default: `name`); `timeout_s` overrides the
    pool's per-item timeout (e.g. longer for code)."""

    name: str
    weight: float = 1.0
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None
    timeout_s: float | None = None

    @property
    def key(self) -> str:
        return self.label or self.name

    @classmethod
    def coerce(cls, spec) -> RewardSpec:
        """From a RewardSpec, a name, a (name, weight[, kwargs]) tuple or a dict of fields."""
        if isinstance(spec, RewardSpec):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        if isinstance(spec, Mapping):
            return cls(**spec)
        if isinstance(spec, Sequence) and 1 <= len(spec) <= 3:
            name, weight, kwargs = (*spec, *(1.0, {})[len(spec) - 1 :])  # pad the defaults
            return cls(name, weight, kwargs or {})
        raise TypeError(f"reward spec must be a name, (name, weight, kwargs) or dict, got {spec!r}")


@dataclass
class RewardResult:
    total: np.ndarray  # float32 [N]; NaN where a weighted component is None
    per_fn: dict[str, np.ndarray]  # label -> float32 [N], NaN for None
    correct: np.ndarray  # bool [N]; from the correctness function (all False if none)
    counters: dict[str, int]  # this call: "<label>/{none,timeouts,exceptions,crashes}", totals

    def metrics(self) -> dict[str, float]:
        """Scalars for logging: per-function mean (over judged items) and judged fraction."""
        out = {}
        for k, v in {"total": self.total, **self.per_fn}.items():
            ok = np.isfinite(v)
            out[f"rewards/{k}/mean"] = float(v[ok].mean()) if ok.any() else float("nan")
            out[f"rewards/{k}/frac_judged"] = float(ok.mean()) if len(v) else 1.0
        out["accuracy"] = float(self.correct.mean()) if len(self.correct) else 0.0
        return out


class RewardStack:
    """Built from specs; `stack(prompts, completions, fields)` returns a RewardResult.

    weights: optional {label: weight} overriding the specs' weights; naming a reward that is not
    configured is an error. correctness: label of the function that defines `correct` (value >=
    `correct_threshold`); "auto" picks the single configured task-accuracy function (math,
    math_dapo, countdown, code), None disables it. pool: where the functions run (default: the
    process's shared pool); its workers build the rule rewards when they start.
    """

    def __init__(
        self,
        specs: Sequence,
        *,
        weights: Mapping[str, float] | None = None,
        correctness: str | None = "auto",
        correct_threshold: float = 1.0,
        pool: RewardPool | None = None,
    ):
        self.specs = [RewardSpec.coerce(s) for s in specs]
        if not self.specs:
            raise ValueError("RewardStack needs at least one reward spec")
        labels = [s.key for s in self.specs]
        dupes = sorted({k for k in labels if labels.count(k) > 1})
        if dupes:
            raise ValueError(f"reward labels must be unique, repeated: {dupes} (set `label`)")
        self._note_keys = {}  # label -> the counters its function reports (a fixed set per step)
        for s in self.specs:  # fail here, not in a worker, on unknown names or bad options
            fn = get_reward_fn(s.name, **s.kwargs)
            self._note_keys[s.key] = tuple(sorted(getattr(fn, "counters", None) or ()))
        self.weights = {s.key: float(s.weight) for s in self.specs}
        for k, w in (weights or {}).items():
            if k not in self.weights:
                raise ValueError(
                    f"weight given for reward {k!r}, which is not configured; configured: {labels}"
                )
            self.weights[k] = float(w)
        if correctness == "auto":
            acc = [s.key for s in self.specs if s.name in ACCURACY_FNS]
            if len(acc) > 1:
                raise ValueError(f"several accuracy rewards {acc}: pass correctness=<label>")
            correctness = acc[0] if acc else None
        elif correctness is not None and correctness not in self.weights:
            raise ValueError(f"correctness={correctness!r} is not a configured reward: {labels}")
        self.correctness, self.correct_threshold = correctness, correct_threshold
        self.pool = pool if pool is not None else default_pool()
        self.pool.preload((s.name, s.kwargs) for s in self.specs)
        self._warned_none: set[str] = set()

    def tasks(self, prompts, completions, fields: Mapping[str, Sequence]) -> list[Task]:
        n = len(prompts)
        if len(completions) != n:
            raise ValueError(f"got {n} prompts but {len(completions)} completions")
        for k, v in fields.items():
            if not hasattr(v, "__len__") or len(v) != n:
                got = len(v) if hasattr(v, "__len__") else type(v).__name__
                raise ValueError(f"field {k!r} must be a per-item list of length {n}, got {got}")
        return [
            Task(
                s.name,
                prompts[i],
                completions[i],
                {k: v[i] for k, v in fields.items()},
                dict(s.kwargs),
                s.timeout_s,
            )
            for s in self.specs
            for i in range(n)
        ]

    def submit(self, prompts, completions, fields: Mapping | None = None, **more) -> Future:
        """Like calling the stack, but returns a Future (overlap rewards with device work)."""
        n = len(prompts)
        fut = self.pool.submit(self.tasks(prompts, completions, {**(fields or {}), **more}))
        out: Future = Future()
        out.set_running_or_notify_cancel()

        def done(f: Future) -> None:
            try:
                out.set_result(self._assemble(f.result(), n))
            except BaseException as e:  # handed to the caller via the Future
                out.set_exception(e)

        fut.add_done_callback(done)
        return out

    def __call__(self, prompts, completions, fields: Mapping | None = None, **more) -> RewardResult:
        return self.submit(prompts, completions, fields, **more).result()

    def _assemble(self, outcomes: list[Outcome], n: int) -> RewardResult:
        per_fn, counters = {}, {"none": 0, "timeouts": 0, "exceptions": 0, "crashes": 0}
        total = np.zeros(n, np.float64)
        for j, s in enumerate(self.specs):
            chunk = outcomes[j * n : (j + 1) * n]
            vals = np.array([np.nan if o.value is None else o.value for o in chunk], np.float64)
            per_fn[s.key] = vals.astype(np.float32)
            for name, count in (
                ("none", sum(o.value is None for o in chunk)),
                ("timeouts", sum(o.status == "timeout" for o in chunk)),
                ("exceptions", sum(o.status == "exception" for o in chunk)),
                ("crashes", sum(o.status == "crash" for o in chunk)),
            ):
                counters[f"{s.key}/{name}"] = count
                counters[name] += count
            for note in self._note_keys[s.key]:  # e.g. "code/sandbox/time_cap"
                counters[f"{s.key}/{note}"] = sum(dict(o.notes).get(note, 0) for o in chunk)
            if counters[f"{s.key}/none"] and s.key not in self._warned_none:
                self._warned_none.add(s.key)  # once per reward: the counters carry the rest
                log.warning(
                    "reward %r could not judge %d of %d items (None: excluded, not scored 0)",
                    s.key,
                    counters[f"{s.key}/none"],
                    n,
                )
            if self.weights[s.key] != 0:
                total += self.weights[s.key] * vals
        if self.correctness is None:
            correct = np.zeros(n, bool)
        else:
            with np.errstate(invalid="ignore"):
                correct = per_fn[self.correctness] >= self.correct_threshold
        return RewardResult(total.astype(np.float32), per_fn, correct, counters)
