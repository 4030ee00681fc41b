"""Procedural tasks: disjoint splits, determinism, countdown solvability (brute force)."""

import itertools
import re
from fractions import Fraction

import pytest

from r1jax.data import load_dataset, make_task, register_task
from r1jax.data.tasks import TASKS, ProceduralTask


def _key(task, ex):
    if task.name == "countdown":
        return f"{','.join(map(str, sorted(ex['nums'])))}->{ex['target']}"
    a, b, op = ex["a"], ex["b"], ex["op"]
    return f"{min(a, b)}{op}{max(a, b)}" if op in "+*" else f"{a}{op}{b}"


def _solvable(values: tuple, target: Fraction) -> bool:
    """Brute force over every pairwise merge with + - * / in both orders (exact rationals)."""
    if len(values) == 1:
        return values[0] == target
    for i, j in itertools.combinations(range(len(values)), 2):
        a, b = values[i], values[j]
        rest = tuple(v for k, v in enumerate(values) if k not in (i, j))
        results = {a + b, a - b, b - a, a * b}
        results |= {a / b} if b else set()
        results |= {b / a} if a else set()
        if any(_solvable(rest + (r,), target) for r in results):
            return True
    return False


def _tinyzero_check(expr: str, nums: list, target: int) -> bool:
    """TinyZero's countdown verifier (verl/utils/reward_score/countdown.py), used as reference."""
    if not re.match(r"^[\d+\-*/().\s]+$", expr):
        return False
    if sorted(int(n) for n in re.findall(r"\d+", expr)) != sorted(nums):
        return False
    return abs(eval(expr, {"__builtins__": None}, {}) - target) < 1e-5


# Small problem spaces so that, without the hash partition, train and test would collide.
SMALL = {
    "countdown": dict(min_nums=3, max_nums=3, max_num=9, max_target=20, test_size=100),
    "arithmetic": dict(digits=2, ops="+-*", test_size=500),
}


@pytest.mark.parametrize("name", ["countdown", "arithmetic"])
def test_train_and_test_are_disjoint_for_every_seed(name):
    tasks = [make_task(name, seed=s, **SMALL[name]) for s in (0, 1)]
    train = set().union(*(_key(t, t.example("train", i)) for t in tasks for i in range(2000)))
    test_lists = [[_key(t, ex) for ex in t.split("test")] for t in tasks]
    test = set().union(*test_lists)
    assert all(len(set(keys)) == len(keys) == SMALL[name]["test_size"] for keys in test_lists)
    assert train.isdisjoint(test)
    assert all(tasks[0].split_of(k) == "test" for k in test)
    # Control: raw draws, before the split filter, do hit test problems in these small spaces.
    raw = {tasks[0].sample(tasks[0]._rng("train", i, 0))[0] for i in range(2000)}
    assert len(raw & test) > 20
    # Roughly test_fraction of the problem space is held out.
    assert 0.06 < len(raw & test) / len(raw) < 0.14


def test_default_countdown_split_is_disjoint_over_thousands():
    task = make_task("countdown", seed=3)
    test = {_key(task, ex) for ex in task.split("test")}
    train = {_key(task, task.example("train", i)) for i in range(3000)}
    assert len(test) == 1024 and train.isdisjoint(test)


def test_determinism_and_pinned_examples():
    a, b = (make_task("countdown", seed=0, test_size=50) for _ in range(2))
    assert [a.example("train", i) for i in range(50)] == [b.example("train", i) for i in range(50)]
    assert a.split("test")[:20] == b.split("test")[:20]
    c = make_task("countdown", seed=1, test_size=50)
    assert [a.example("train", i) for i in range(50)] != [c.example("train", i) for i in range(50)]
    assert a.split("test")[:20] != c.split("test")[:20]
    # Golden values: a change here silently changes everyone's train and test data.
    ex = a.example("train", 0)
    assert (ex["nums"], ex["target"], ex["answer"]) == ([13, 27, 24], 10, "(24 + 13) - 27")
    assert ex["id"] == "countdown/s0/train/0" and ex["task"] == "countdown"
    assert ex["question"] == (
        "Using the numbers [13, 27, 24], create an equation that equals 10. You can use basic "
        "arithmetic operations (+, -, *, /) and each number can only be used once."
    )
    ex = a.split("test")[0]
    assert (ex["nums"], ex["target"], ex["answer"]) == ([94, 85, 87], 78, "87 + (85 - 94)")
    ar = make_task("arithmetic", seed=0).example("train", 0)
    assert (ar["question"], ar["answer"]) == ("What is 463 + 271?", "734")


def test_countdown_every_item_is_solvable_by_brute_force():
    task = make_task("countdown", seed=0)
    items = list(task.split("test")) + [task.example("train", i) for i in range(500)]
    for ex in items:
        nums, target = ex["nums"], ex["target"]
        assert 3 <= len(nums) <= 4 and all(1 <= n <= 99 for n in nums) and 1 <= target <= 100
        assert _solvable(tuple(Fraction(n) for n in nums), Fraction(target)), ex
        assert _tinyzero_check(ex["answer"], nums, target), ex
    assert {len(ex["nums"]) for ex in items} == {3, 4}


def test_arithmetic_answers_and_digits():
    task = make_task("arithmetic", seed=5, digits=(2, 4), ops="-*")
    for i in range(300):
        ex = task.example("train", i)
        a, b, op = ex["a"], ex["b"], ex["op"]
        assert op in "-*" and 10 <= a <= 9999 and 10 <= b <= 9999
        assert int(ex["answer"]) == (a - b if op == "-" else a * b) >= 0
        assert ex["question"] == f"What is {a} {op} {b}?"


def test_num_examples_and_errors():
    task = make_task("arithmetic", digits=1, ops="+", test_size=3)
    assert task.num_examples("test") == 3 and task.num_examples("train") == 2**31 - 1
    assert len(load_dataset("arithmetic", "test", digits=1, ops="+", test_size=3)) == 3
    with pytest.raises(IndexError):
        task.example("test", 3)
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        task.num_examples("validation")
    # 1-digit addition has ~55 problems, ~10% held out: 100 distinct test problems cannot exist.
    with pytest.raises(ValueError, match="found only .* distinct test problems"):
        make_task("arithmetic", digits=1, ops="+", test_size=100).split("test")[0]
    with pytest.raises(KeyError, match="registered tasks: .*countdown"):
        make_task("sudoku")
    with pytest.raises(TypeError, match="does not take"):
        load_dataset("countdown", "train", path="/x.jsonl")


def test_registering_a_task_is_one_call():
    class Parity(ProceduralTask):
        name = "parity"

        def sample(self, rng):
            n = rng.randint(0, 10**6)
            return str(n), {"question": f"Is {n} even?", "answer": "yes" if n % 2 == 0 else "no"}

    register_task("parity", Parity)
    try:
        ds = load_dataset("parity", "test", seed=2, test_size=5)
        assert len(ds) == 5 and all(ex["task"] == "parity" for ex in ds)
        assert all(ds.task.split_of(ex["question"].split()[1]) == "test" for ex in ds)
        with pytest.raises(ValueError, match="already registered"):
            register_task("parity", Parity)
    finally:
        del TASKS["parity"]
