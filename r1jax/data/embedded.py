"""The embedded default: a running-sum task and the synthetic corpus of its base model.

Task ("sumchain"): "Compute 17 + 8 + 25 + 4", answer "54". Verifiable by exact match.

The embedded base model is pretrained (configs/pretrain.py) on documents that are the R1-Zero
template around such a problem followed by a response written in one of these styles:

  reason       <think> 17 + 8 = 25. 25 + 25 = 50. 50 + 4 = 54. </think> <answer> 54 </answer>
               but each carry is dropped with probability `slip` (25 + 25 = 40), and later
               steps build on the error, so the answer is wrong;
  guess        <think> </think> <answer> 52 </answer>   (no reasoning; usually a near miss)
  untagged     the reasoning, then "The answer is 54." without the answer tags.

Like a real base model it has seen careful reasoning but does not reliably choose it. R1-Zero's
claim in miniature: GRPO with rule rewards (accuracy + format) makes the model choose to reason
and to reason carefully, so accuracy rises and responses grow longer as guessing dies out.
"""

from __future__ import annotations

import random

from r1jax.data import templates
from r1jax.data.tasks import ProceduralTask, register_task

STYLES = {"reason": 0.55, "guess": 0.30, "untagged": 0.15}


class SumChain(ProceduralTask):
    """Sums of `min_terms`..`max_terms` integers in [1, max_value]."""

    name = "sumchain"

    def __init__(self, *, min_terms: int = 3, max_terms: int = 5, max_value: int = 49, **kw):
        super().__init__(**kw)
        if not 2 <= min_terms <= max_terms or max_value < 2:
            raise ValueError(f"sumchain: bad sizes {min_terms}..{max_terms} terms, <= {max_value}")
        self.terms, self.max_value = (min_terms, max_terms), max_value

    def sample(self, rng: random.Random) -> tuple[str, dict]:
        nums = [rng.randint(1, self.max_value) for _ in range(rng.randint(*self.terms))]
        key = "+".join(map(str, nums))  # order matters: it is a different chain of steps
        question = "Compute " + " + ".join(map(str, nums))
        return key, {"question": question, "answer": str(sum(nums)), "nums": nums}


register_task("sumchain", SumChain)


def _add(a: int, b: int, rng: random.Random, slip: float) -> int:
    """a + b, dropping each carry (units->tens, tens->hundreds) with probability `slip`."""
    out = a + b
    if (a % 10) + (b % 10) >= 10 and rng.random() < slip:
        out -= 10
    if (a // 10 % 10) + (b // 10 % 10) + ((a % 10) + (b % 10) >= 10) >= 10 and rng.random() < slip:
        out -= 100
    return out


def reasoning(nums: list[int], rng: random.Random, slip: float) -> tuple[str, int]:
    """'a + b = c.' steps (with slips) and the final running total."""
    total, steps = nums[0], []
    for x in nums[1:]:
        new = _add(total, x, rng, slip)
        steps.append(f"{total} + {x} = {new}.")
        total = new
    return " ".join(steps), total


def response(nums: list[int], rng: random.Random, style: str, slip: float = 0.4) -> str:
    """One response in the given style; starts with a space, as it follows 'Assistant:'."""
    if style == "guess":
        exact = sum(nums)
        guess = (
            exact
            if rng.random() < 0.2
            else max(0, exact + rng.choice([-1, 1]) * rng.randint(1, 15))
        )
        return f" <think> </think> <answer> {guess} </answer>"
    steps, total = reasoning(nums, rng, slip)
    if style == "untagged":
        return f" <think> {steps} </think> The answer is {total}."
    return f" <think> {steps} </think> <answer> {total} </answer>"


def pretrain_document(example: dict, rng: random.Random, slip: float = 0.4) -> tuple[str, str]:
    """(prompt, response) of one pretraining document for a sumchain example."""
    style = rng.choices(list(STYLES), weights=list(STYLES.values()))[0]
    return templates.r1zero(example["question"]), response(example["nums"], rng, style, slip)


def corpus(n: int, seed: int = 0, slip: float = 0.4, **task_kw) -> list[tuple[str, str]]:
    """n (prompt, response) documents over the task's *train* split only."""
    task = SumChain(seed=seed, **task_kw)
    rng = random.Random(seed)
    return [pretrain_document(task.example("train", i), rng, slip) for i in range(n)]
