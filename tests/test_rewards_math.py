"""Math accuracy: answer extraction, symbolic equivalence (math-verify) and the reward values."""

import pytest

from r1jax.rewards.math import answers_equivalent, extract_answer, math_accuracy

EQUIVALENCE = [
    # fractions and decimals
    ("0.5", r"\frac{1}{2}", True),
    (r"\frac12", "0.5", True),
    (r"\dfrac{3}{4}", "0.75", True),
    ("3/4", r"\frac{3}{4}", True),
    (r"\frac{1}{2}", "1/2", True),
    (".5", "0.5", True),
    (r"-\frac{1}{2}", "-0.5", True),
    ("1.5", r"\frac{3}{2}", True),
    ("2", "2.0", True),
    ("1,000", "1000", True),
    (r"\$1,000.00", "1000", True),
    (r"\frac{1}{3}", "0.3333333", True),  # math-verify rounds to 6 decimals
    # percentages
    (r"50\%", "0.5", True),
    (r"10\%", "0.1", True),
    (r"5\%", "0.05", True),
    ("0.1", r"10\%", True),
    # roots and pi
    (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", True),
    (r"\sqrt{8}", r"2\sqrt{2}", True),
    (r"3\sqrt{3}", r"\sqrt{27}", True),
    (r"\frac{\sqrt{2}}{2}", "0.7071067811865476", True),
    (r"\sqrt{2}", "1.41421356", True),
    (r"2\pi", "6.283185307179586", True),
    (r"\dfrac{\pi}{4}", r"\frac{\pi}{4}", True),
    # intervals, tuples, sets
    ("[0,1)", "[0, 1)", True),
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    (r"\{1,2\}", r"\{2,1\}", True),
    ("1,2", "2,1", True),
    (r"\{1, 2, 3\}", "1, 2, 3", True),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3, \frac{\pi}{2})", True),
    # units and text
    ("5 cm", "5", True),
    (r"5\text{ cm}", "5", True),
    (r"5\text{ dollars}", "5", True),
    (r"\text{5 dollars}", "5", True),
    (r"12\text{ km/h}", "12", True),
    (r"4 \mbox{ cm}^2", "4", True),
    (r"\frac{9}{2}\text{ hours}", "4.5", True),
    (r"\$18.90", "18.9", True),
    (r"360^\circ", "360", True),
    (r"\text{(C)}", "C", True),
    # expressions
    ("x=5", "5", True),
    ("10^{3}", "1000", True),
    ("2^{10}", "1024", True),
    (r"\frac{x}{2}", "x/2", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("2x", "2*x", True),
    ("y=2x+1", "2x+1", True),
    (r"\infty", r"\infty", True),
    ("9!", "362880", True),
    # negatives
    ("2", "3", False),
    (r"\frac{1}{3}", "0.333", False),
    ("1/3", "0.33", False),
    (r"\pi", "3.14", False),
    ("[0,1)", "(0,1]", False),
    ("[0,1)", "[0,1]", False),
    ("(1,2)", "(2,1)", False),
    ("(1,2)", "(1,2,3)", False),
    (r"\{1,2\}", r"\{1,3\}", False),
    ("5 cm", "6", False),
    (r"\sqrt{2}", "2", False),
    (r"-\frac12", "0.5", False),
    (r"\frac{2}{3}", r"\frac{3}{2}", False),
    (r"50\%", "5", False),
    ("1000", "100", False),
    ("x^2", "2x", False),
    ("a", "b", False),
    (r"\text{(B)}", "C", False),
    ("", "5", False),
    ("???", "5", False),
    (None, "5", False),
]


def test_equivalence_table():
    assert len(EQUIVALENCE) >= 60
    wrong = [(a, b, want) for a, b, want in EQUIVALENCE if answers_equivalent(a, b) != want]
    assert wrong == []
    # symmetric, as majority voting needs
    wrong = [(a, b, want) for a, b, want in EQUIVALENCE if answers_equivalent(b, a) != want]
    assert wrong == []


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
