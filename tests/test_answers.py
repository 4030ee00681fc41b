"""Answer checking (issue 13): the (gold, prediction) table of tests/answer_cases.py against the
training reward and answers_equivalent; the several-boxes rule; cons@k voting and rejection
sampling judged by the fixed checker."""

import numpy as np
import pytest
from answer_cases import CASES

from r1jax import evaluation as E
from r1jax.rewards.math import answers_equivalent, extract_answer, math_accuracy
from r1jax.rewards.pool import RewardPool
from r1jax.rewards.registry import get_reward_fn
from r1jax.rewards.stack import RewardStack
from r1jax.stages import rejection

# (gold, prediction, reward, equivalent); `equivalent` defaults to `reward`
ROWS = [(g, p, r, rest[0] if rest else r) for g, p, r, *rest in CASES]


def test_table_against_the_training_reward():
    assert len(ROWS) >= 150
    completions = ["\\boxed{" + p + "}" if p else "" for _, p, _, _ in ROWS]
    got = math_accuracy([""] * len(ROWS), completions, answer=[g for g, _, _, _ in ROWS])
    got = [None if v is None else v == 1.0 for v in got]
    wrong = [(g, p, want, v) for (g, p, want, _), v in zip(ROWS, got) if v != want]
    assert wrong == []


def test_table_against_answers_equivalent_both_ways():
    wrong = [
        (g, p, want)
        for g, p, _, want in ROWS
        if answers_equivalent(g, p) != want or answers_equivalent(p, g) != want
    ]
    assert wrong == []
    assert not answers_equivalent(None, "5") and not answers_equivalent(" ", " ")


def test_several_boxes_rule():
    hedge = r"It is \boxed{3}, or maybe \boxed{5}."
    agree = r"\boxed{0.5}, that is \boxed{\frac{1}{2}}"
    assert extract_answer(hedge) == "5"  # "final": the last box
    assert extract_answer(hedge, boxes="all_equal") is None
    assert extract_answer(agree, boxes="all_equal") == r"\frac{1}{2}"
    # the last <answer> block is the scope: boxes in the reasoning do not count
    tagged = r"<think>\boxed{4}</think><answer>\boxed{5}</answer>"
    assert extract_answer(tagged, boxes="all_equal") == "5"
    comps, golds = [hedge, hedge, agree], ["5", "3", "0.5"]
    assert math_accuracy([""] * 3, comps, answer=golds) == [1.0, 0.0, 1.0]
    strict = get_reward_fn("math", boxes="all_equal")  # as configured in rewards.<label>.kwargs
    assert strict([""] * 3, comps, answer=golds) == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="boxes must be one of"):
        math_accuracy([""], [hedge], answer=["5"], boxes="first")


def test_cons_at_k_does_not_merge_different_answers():
    # Before: "x=3" joined the bucket of "3" (3 votes, sample 0 won). Now "3" (1 vote), "x=3" (2)
    # and "5" (2) are three answers; the 2-2 tie goes to the bucket opened first, "x=3".
    assert E.majority_vote(["3", "x=3", "x=3", "5", "5"]) == (1, 2)
    # The pool path (evaluate()) decides the same way; an ordered pair is not a set.
    lists = [["3", "x=3", "x=3", "5", "5"], ["(1,2)", r"\{1,2\}", r"\{2,1\}"], ["0.5", "1/2"]]
    assert E.vote(lists, RewardPool(workers=0)) == [1, 1, 0]


def test_rejection_sampling_judges_with_the_fixed_checker():
    stack = RewardStack([("math", 1.0)], pool=RewardPool(workers=0))
    exs = [{"answer": "101_2"}, {"answer": r"5\text{ cm}^2"}]
    comps = [r"\boxed{101_3}", r"\boxed{101_2}", r"\boxed{5\text{ cm}^3}", r"\boxed{5\text{ cm}^2}"]
    out = {"length": np.full(4, 8), "truncated": np.zeros(4, bool)}
    correct, _ = rejection.score(stack, lambda c, t: None, exs, ["q0", "q1"], out, comps, 2)
    assert correct.tolist() == [0.0, 1.0, 0.0, 1.0]
