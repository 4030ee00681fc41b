"""Procedural tasks with verifiable answers: seeded generators with disjoint train/test splits.

Every task draws a problem from a seeded `random.Random` and names it by a canonical key (e.g.
the sorted numbers and target of a countdown problem). The split a problem belongs to is a hash
of that key and the task name alone, so no seed, index or generator option can move a test
problem into train (raising `test_fraction` only moves problems from train to test). The train split
is index-addressable and effectively unbounded; the test split is the first `test_size` distinct
test-bucket problems of a seeded stream, so it is finite and has no duplicates.

Adding a task: subclass `ProceduralTask`, implement `sample(rng) -> (key, fields)`, and add the
class to `TASKS` (or call `register_task`).
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Callable, Sequence
from fractions import Fraction

SPLITS = ("train", "test")
TRAIN_SIZE = 2**31 - 1  # "Unbounded": index-addressable, never exhausted in practice.


def stable_hash(*parts: object) -> int:
    """A 64-bit hash that, unlike `hash()`, is the same in every process and Python version."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class ProceduralTask:
    """Base class: turns `sample(rng)` into deterministic, disjoint train and test splits."""

    name = "task"

    def __init__(self, *, seed: int = 0, test_size: int = 1024, test_fraction: float = 0.1):
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"{self.name}: test_fraction must be in (0, 1), got {test_fraction}")
        if test_size < 0:
            raise ValueError(f"{self.name}: test_size must be >= 0, got {test_size}")
        self.seed = int(seed)
        self.test_size = int(test_size)
        self.test_fraction = float(test_fraction)
        self._test: list[dict] | None = None

    def sample(self, rng: random.Random) -> tuple[str, dict]:
        """Draws one problem: (canonical key, example fields without `id`)."""
        raise NotImplementedError

    def split_of(self, key: str) -> str:
        """The split a canonical problem belongs to; depends on the key only, never on the seed."""
        bucket = stable_hash("split", self.name, key) % 1_000_000
        return "test" if bucket < self.test_fraction * 1_000_000 else "train"

    def num_examples(self, split: str) -> int:
        _check_split(split, self.name)
        return TRAIN_SIZE if split == "train" else self.test_size

    def example(self, split: str, index: int) -> dict:
        n = self.num_examples(split)
        if not 0 <= index < n:
            raise IndexError(f"{self.name}/{split}: index {index} out of range [0, {n})")
        if split == "test":
            return copy.deepcopy(self._test_examples()[index])  # Callers may mutate `nums`.
        for attempt in range(10_000):
            key, fields = self.sample(self._rng("train", index, attempt))
            if self.split_of(key) == "train":
                return self._finish(fields, "train", index)
        raise RuntimeError(f"{self.name}: no train problem after 10000 draws; test_fraction?")

    def split(self, split: str) -> TaskSplit:
        """The split as an index-addressable sequence of examples."""
        return TaskSplit(self, split)

    def _rng(self, split: str, index: int, attempt: int) -> random.Random:
        return random.Random(stable_hash(self.name, self.seed, split, index, attempt))

    def _finish(self, fields: dict, split: str, index: int) -> dict:
        return {"id": f"{self.name}/s{self.seed}/{split}/{index}", "task": self.name, **fields}

    def _test_examples(self) -> list[dict]:
        # Built once: the first `test_size` distinct test-bucket problems of the seeded stream.
        if self._test is None:
            examples, seen = [], set()
            max_draws = 1000 + int(50 * self.test_size / self.test_fraction)
            for draw in range(max_draws):
                if len(examples) == self.test_size:
                    break
                key, fields = self.sample(self._rng("test", draw, 0))
                if key not in seen and self.split_of(key) == "test":
                    seen.add(key)
                    examples.append(self._finish(fields, "test", len(examples)))
            if len(examples) < self.test_size:
                raise ValueError(
                    f"{self.name}: found only {len(examples)} distinct test problems in "
                    f"{max_draws} draws; lower test_size (is the problem space that small?)"
                )
            self._test = examples
        return self._test


class TaskSplit(Sequence):
    """One split of a procedural task as a lazy `Sequence[dict]`."""

    def __init__(self, task: ProceduralTask, split: str):
        self.task, self.split = task, split
        self._len = task.num_examples(split)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        return self.task.example(self.split, index)


# ------------------------------------------------------------------------------------- countdown


def countdown_question(nums: Sequence[int], target: int) -> str:
    """TinyZero's user text without the <think>/<answer> instructions (templates add those)."""
    return (
        f"Using the numbers {list(nums)}, create an equation that equals {target}. You can use "
        "basic arithmetic operations (+, -, *, /) and each number can only be used once."
    )


def _combine(op: str, a: int | Fraction, b: int | Fraction) -> int | Fraction | None:
    # Exact arithmetic; values stay plain ints (fast) unless a division leaves a remainder.
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return None
    q = Fraction(a) / b
    return q.numerator if q.denominator == 1 else q


class Countdown(ProceduralTask):
    """Reach `target` from `nums` with + - * / using every number exactly once.

    Numbers are uniform in [1, max_num] (1-99 like TinyZero's `Countdown-Tasks-3to4`), 3-4 of
    them; the target is an integer in [min_target, max_target] (default 1-100, about the range
    of that set). Solvable by construction: a random expression tree over all the numbers is
    evaluated exactly (rational intermediates are allowed, as in TinyZero's float `eval`) and
    kept if it lands in range; its string is the `answer`.
    """

    name = "countdown"

    def __init__(
        self,
        *,
        min_nums: int = 3,
        max_nums: int = 4,
        max_num: int = 99,
        min_target: int = 1,
        max_target: int = 100,
        **kw,
    ):
        super().__init__(**kw)
        if not 2 <= min_nums <= max_nums:
            raise ValueError(
                f"countdown: need 2 <= min_nums <= max_nums, got {min_nums}, {max_nums}"
            )
        if not 1 <= min_target <= max_target:
            raise ValueError(f"countdown: bad target range [{min_target}, {max_target}]")
        self.min_nums, self.max_nums, self.max_num = min_nums, max_nums, max_num
        self.min_target, self.max_target = min_target, max_target

    def sample(self, rng: random.Random) -> tuple[str, dict]:
        for _ in range(1000):
            k = rng.randint(self.min_nums, self.max_nums)
            nums = [rng.randint(1, self.max_num) for _ in range(k)]
            for _ in range(50):  # Several trees per number set before drawing new numbers.
                value, expr = self._random_expression(rng, nums)
                if isinstance(value, int) and self.min_target <= value <= self.max_target:
                    target = int(value)
                    rng.shuffle(nums)
                    key = f"{','.join(map(str, sorted(nums)))}->{target}"
                    return key, {
                        "question": countdown_question(nums, target),
                        "answer": expr,
                        "nums": nums,
                        "target": target,
                    }
        raise ValueError(f"countdown: no target in [{self.min_target}, {self.max_target}] reached")

    @staticmethod
    def _random_expression(rng: random.Random, nums: list[int]) -> tuple[int | Fraction, str]:
        # Merge two random items with a random op until one is left: a uniform-ish random tree.
        items = [(n, str(n), True) for n in nums]  # (value, text, is_atom)
        while len(items) > 1:
            i, j = rng.sample(range(len(items)), 2)
            (a, ta, atom_a), (b, tb, atom_b) = items[i], items[j]
            op = rng.choice("+-*/")
            value = _combine(op, a, b)
            if value is None:
                return Fraction(-1, 2), ""  # Division by zero: the caller rejects this tree.
            text = f"{ta if atom_a else f'({ta})'} {op} {tb if atom_b else f'({tb})'}"
            items = [x for k, x in enumerate(items) if k not in (i, j)] + [(value, text, False)]
        return items[0][0], items[0][1]


# ------------------------------------------------------------------------------------ arithmetic


class Arithmetic(ProceduralTask):
    """`a op b` for n-digit integers; the answer is the exact integer as a string.

    `digits` is the digit count of each operand, an int or an inclusive (min, max) range drawn
    per operand. `ops` is a subset of "+-*". With `allow_negative=False` subtraction puts the
    larger operand first. Commutative problems share one key (3+5 and 5+3 are the same problem).
    """

    name = "arithmetic"

    def __init__(
        self,
        *,
        digits: int | Sequence[int] = 3,
        ops: str | Sequence[str] = "+-*",
        allow_negative: bool = False,
        **kw,
    ):
        super().__init__(**kw)
        lo, hi = (digits, digits) if isinstance(digits, int) else tuple(digits)
        if not 1 <= lo <= hi:
            raise ValueError(f"arithmetic: bad digits {digits!r}")
        if not ops or set(ops) - set("+-*"):
            raise ValueError(f"arithmetic: ops must be a non-empty subset of '+-*', got {ops!r}")
        self.digits, self.ops, self.allow_negative = (lo, hi), "".join(ops), allow_negative

    def _operand(self, rng: random.Random) -> int:
        n = rng.randint(*self.digits)
        return rng.randint(0 if n == 1 else 10 ** (n - 1), 10**n - 1)

    def sample(self, rng: random.Random) -> tuple[str, dict]:
        a, b, op = self._operand(rng), self._operand(rng), rng.choice(self.ops)
        if op == "-" and not self.allow_negative and a < b:
            a, b = b, a
        result = a + b if op == "+" else a - b if op == "-" else a * b
        key = f"{min(a, b)}{op}{max(a, b)}" if op in "+*" else f"{a}{op}{b}"
        return key, {
            "question": f"What is {a} {op} {b}?",
            "answer": str(result),
            "a": a,
            "b": b,
            "op": op,
        }


# -------------------------------------------------------------------------------------- registry

TASKS: dict[str, Callable[..., ProceduralTask]] = {
    "countdown": Countdown,
    "arithmetic": Arithmetic,
}


def register_task(name: str, factory: Callable[..., ProceduralTask]) -> None:
    if name in TASKS:
        raise ValueError(f"task {name!r} is already registered")
    TASKS[name] = factory


def make_task(name: str, **kw) -> ProceduralTask:
    """Creates a registered task by name, e.g. `make_task("countdown", seed=1, max_nums=3)`."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; registered tasks: {sorted(TASKS)}")
    return TASKS[name](**kw)


def _check_split(split: str, name: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{name}: unknown split {split!r}; expected one of {SPLITS}")
