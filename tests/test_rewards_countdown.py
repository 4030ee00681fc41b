"""Countdown reward: TinyZero's scores (0 / 0.1 / 1.0) with a safe evaluator."""

import pytest

from r1jax.rewards.countdown import countdown_reward, countdown_score, safe_eval

NUMS, TARGET = [44, 19, 35], 98  # 44 + 19 + 35 = 98


def _ans(eq: str) -> str:
    return f"<think>let me try</think>\n<answer>{eq}</answer>"


@pytest.mark.parametrize(
    "completion, nums, target, want",
    [
        (_ans("44 + 19 + 35"), NUMS, TARGET, 1.0),
        (_ans("(44 + 35) + 19"), NUMS, TARGET, 1.0),
        (_ans("44 + 19 - 35"), NUMS, TARGET, 0.1),  # wrong result
        (_ans("44 + 44 + 35"), NUMS, TARGET, 0.1),  # 44 used twice, 19 missing
        (_ans("44 + 35"), NUMS, TARGET, 0.1),  # a number missing
        (_ans("44 + 19 + 35 + 0"), NUMS, TARGET, 0.1),  # an extra number
        (_ans("44 + 19 + 35 = 98"), NUMS, TARGET, 0.1),  # 98 is an extra number
        (_ans("(100 - 4) / 6"), [100, 4, 6], 16, 1.0),  # division
        (_ans("7 / 2 * 4"), [7, 2, 4], 14, 1.0),  # non-integer intermediate 3.5
        (_ans("3 / (2 - 2)"), [3, 2, 2], 1, 0.1),  # division by zero
        (_ans("-3 + 5 * 2"), [3, 5, 2], 7, 1.0),  # unary minus
        ("<think>44+19+35</think> 44 + 19 + 35", NUMS, TARGET, 0.0),  # no answer tag
        ("<answer>\n44 + 19 + 35\n</answer>", NUMS, TARGET, 0.0),  # tag spans lines (as TinyZero)
        ("<answer>1+1</answer> then <answer>44+19+35</answer>", NUMS, TARGET, 1.0),  # last tag
        ("<answer>44+19+35</answer> then <answer>1+1</answer>", NUMS, TARGET, 0.1),
        (_ans("44 + 19 + 35") + "\nThat is all.", NUMS, TARGET, 1.0),  # trailing line: fine
        (_ans(""), NUMS, TARGET, 0.1),  # empty answer
        # hostile input: contained, scored like any other invalid equation
        (_ans("__import__('os').system('echo hi')"), NUMS, TARGET, 0.1),
        (_ans("9**9**9"), [9, 9, 9], 1, 0.1),  # numbers valid; ** is rejected, not evaluated
        (_ans("44 // 1"), [44, 1], 44, 0.1),  # floor division is not an allowed operator
        (_ans("(" * 5000 + "44+19+35" + ")" * 5000), NUMS, TARGET, 0.1),  # too long / deep
        (_ans("(" * 250 + "44+19+35" + ")" * 250), NUMS, TARGET, 0.1),  # parser nesting limit
        (_ans("- " * 400 + "44+19+35"), NUMS, TARGET, 0.1),  # deeper than MAX_DEPTH
        (_ans("9" * 5000), [1], 1, 0.1),  # literal beyond int() digit limits
        (_ans("44 + 19 + 35 ; x"), NUMS, TARGET, 0.1),  # character outside the allowed set
    ],
)
def test_countdown_score(completion, nums, target, want):
    assert countdown_score(completion, target, nums) == want


def test_last_line_quirk_is_configurable():
    trailing = _ans("44 + 19 + 35") + "\n"
    assert countdown_score(trailing, TARGET, NUMS) == 1.0
    assert countdown_score(trailing, TARGET, NUMS, last_line_only=True) == 0.0  # TinyZero
    assert countdown_score(_ans("44 + 19 + 35"), TARGET, NUMS, last_line_only=True) == 1.0


def test_safe_eval_values():
    assert safe_eval("(100 - 4) / 6") == 16.0
    assert safe_eval("7 / 2") == 3.5
    assert safe_eval("-(3 - 5) * +2") == 4
    assert safe_eval("1 / 0") is None
    assert safe_eval("2 ** 3") is None
    assert safe_eval("()") is None
    assert safe_eval("03 + 1") is None  # Python rejects leading zeros, like TinyZero's eval
    assert safe_eval("abs(1)") is None


def test_countdown_reward_batch_and_options():
    completions = [_ans("44 + 19 + 35"), _ans("44 - 19 - 35"), "nothing"]
    got = countdown_reward(
        ["p"] * 3, completions, nums=[NUMS] * 3, target=[TARGET] * 3, completion_lens=[1, 2, 3]
    )
    assert got == [1.0, 0.1, 0.0]
    got = countdown_reward(["p"], completions[1:2], numbers=[NUMS], target=[TARGET], format_score=0)
    assert got == [0.0]
    with pytest.raises(ValueError, match="'target' and 'nums'"):
        countdown_reward(["p"], ["x"], answer=["1"])
