"""Math accuracy: answer extraction and the reward values (answer matching: test_answers.py)."""

import pytest

from r1jax.rewards.math import answers_equivalent, extract_answer, math_accuracy

# The equivalence table (and its rows) moved to tests/answer_cases.py, run by tests/test_answers.py
# against both this reward and answers_equivalent.


@pytest.mark.parametrize(
    "text, want",
    [
        (r"so \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),  # nested braces
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces are literal
        ("$\\boxed{x^{2}}$", "x^{2}"),
        (r"\fbox{42}", "42"),
        (r"\boxed 5", "5"),
        (r"\boxed{1} then \boxed{2}", "2"),  # the last box
        (r"x \boxed{\frac{1}{2}", "2"),  # unclosed box (truncated): falls back to the last number
        ("<answer> 7 </answer>", "7"),
        (r"<answer>The answer is \boxed{8}</answer>", "8"),
        (r"<think>\boxed{3}</think><answer>4</answer>", "4"),  # the answer block wins
        ("She sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),  # GSM8K gold
        ("#### 1,234", "1234"),
        ("so she has 18 dollars, or $18.50 total.", "18.50"),
        ("-3 degrees", "-3"),
        ("The total is 1,000,000 people.", "1000000"),
        ("no numbers here", None),
    ],
)
def test_extract_answer(text, want):
    assert extract_answer(text) == want


def test_extract_answer_fallbacks():
    assert extract_answer(r"x \boxed{\frac{1}{2}", fallback="none") is None
    assert extract_answer(r" \frac{1}{2} ", fallback="whole") == r"\frac{1}{2}"
    with pytest.raises(ValueError, match="fallback"):
        extract_answer("1", fallback="first")


def test_math_accuracy_values():
    completions = [
        r"<think>half</think> <answer>\boxed{0.5}</answer>",  # gold \frac12: 1
        r"The answer is \boxed{\frac{2}{3}}",  # wrong: 0
        "I think it is 72",  # no box: 0 by default
        r"\boxed{C}",  # text answer: 1
        r"\boxed{72}",  # GSM8K gold: 1
        r"\boxed{\frac{\sqrt{3}}{2}}",  # gold is a full MATH solution: 1
        r"\boxed{5}",  # gold unparsable: None
        r"\boxed{5}",  # empty gold: None
    ]
    golds = [
        r"\frac12",
        "0.5",
        "72",
        r"\text{(C)}",
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72",
        r"So $\sin 60^\circ = \boxed{\frac{\sqrt{3}}{2}}$.",
        "???",
        "",
    ]
    prompts = ["q"] * len(completions)
    assert math_accuracy(prompts, completions, answer=golds) == [
        1.0,
        0.0,
        0.0,
        1.0,
        1.0,
        1.0,
        None,
        None,
    ]
    got = math_accuracy(prompts[:3], completions[:3], answer=golds[:3], last_number_fallback=True)
    assert got == [1.0, 0.0, 1.0]
    dapo = math_accuracy(prompts[:2], completions[:2], solution=golds[:2], wrong_value=-1.0)
    assert dapo == [1.0, -1.0]


def test_math_accuracy_ignores_unknown_fields_and_needs_answer():
    out = math_accuracy(["q"], [r"\boxed{2}"], answer=["2"], completion_lens=[5], truncated=[0])
    assert out == [1.0]
    with pytest.raises(ValueError, match="'answer'"):
        math_accuracy(["q"], [r"\boxed{2}"], target=[2])


def test_works_off_the_main_thread():
    # math-verify's default signal.alarm timeout raises off the main thread; we disable it.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as ex:
        got = ex.submit(math_accuracy, ["q"], [r"\boxed{\frac{1}{2}}"], answer=["0.5"]).result()
        assert got == [1.0]
        assert ex.submit(answers_equivalent, r"50\%", r"\frac12").result() is True
