"""Format (strict/lenient), language consistency and the DAPO overlong penalty."""

import pytest

from r1jax.rewards.format import format_reward, reasoning_text
from r1jax.rewards.language import language_consistency, language_share
from r1jax.rewards.overlong import OverlongPenalty

R1_ZERO = (
    "A conversation between User and Assistant. ... The reasoning process and answer are enclosed "
    "within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think> <answer> answer here </answer>. User: 1+1? Assistant:"
)
TINYZERO = (
    "User: Using the numbers [1, 2], ...\nAssistant: Let me solve this step by step.\n<think>"
)
R1_EVAL = "<｜User｜>What is 1+1? Please reason step by step.<｜Assistant｜><think>\n"

FORMAT_CASES = [
    # (prompt, completion, strict, lenient)
    ("", "<think>a</think><answer>b</answer>", 1.0, 1.0),
    ("", "<think>\na\n</think>\n<answer>\nb\n</answer>\n", 1.0, 1.0),
    ("", "  <think>a</think>   <answer>b</answer>  ", 1.0, 1.0),
    ("", "<think></think><answer></answer>", 1.0, 1.0),
    ("", "Sure! <think>a</think><answer>b</answer>", 0.0, 1.0),  # text before
    ("", "<think>a</think> so <answer>b</answer>", 0.0, 1.0),  # text between
    ("", "<think>a</think><answer>b</answer> bye", 0.0, 1.0),  # text after
    ("", "<answer>b</answer><think>a</think>", 0.0, 0.0),  # wrong order
    ("", "<think>a</think>", 0.0, 0.0),
    ("", "<answer>b</answer>", 0.0, 0.0),
    ("", "<think>a<think>b</think><answer>c</answer>", 0.0, 1.0),  # nested think
    ("", "<think>a</think><answer>b</answer><answer>c</answer>", 0.0, 1.0),  # two answers
    ("", "<think>a</think><think>b</think><answer>c</answer>", 0.0, 1.0),  # two thinks
    # The prompt opened <think>: the completion starts inside the think block.
    (TINYZERO, "a</think>\n<answer>b</answer>", 1.0, 1.0),
    (TINYZERO, "<think>a</think><answer>b</answer>", 0.0, 1.0),  # re-opened: two opening tags
    (R1_EVAL, "reasoning\n</think> <answer>2</answer>", 1.0, 1.0),
    (R1_EVAL, "reasoning\n</think>\n\nThe answer is \\boxed{2}", 0.0, 0.0),
    # The R1-Zero template mentions closed tags and ends with "Assistant:": nothing is opened.
    (R1_ZERO, "a</think><answer>b</answer>", 0.0, 0.0),
    (R1_ZERO, " <think>a</think> <answer>b</answer>", 1.0, 1.0),
]


def test_format_table():
    prompts = [p for p, *_ in FORMAT_CASES]
    completions = [c for _, c, *_ in FORMAT_CASES]
    assert format_reward(prompts, completions) == [s for *_, s, _ in FORMAT_CASES]
    assert format_reward(prompts, completions, strict=False) == [l for *_, l in FORMAT_CASES]


def test_reasoning_text():
    assert reasoning_text("", "<think> a b </think><answer>c</answer>") == " a b "
    assert reasoning_text(TINYZERO, "x y</think><answer>c</answer>") == "x y"
    assert reasoning_text("", "cut off <think> mid") == " mid"  # never closed
    assert reasoning_text("", "only </think> close") == "only "
    assert reasoning_text("", "no tags at all") == "no tags at all"


@pytest.mark.parametrize(
    "prompt, completion, en, zh",
    [
        ("", "I think 这个 answer is 42", 4 / 6, 2 / 6),  # every CJK char is a word
        ("", "<think>Let me think. 让我想想</think><answer>5</answer>", 3 / 7, 4 / 7),
        ("", "<think></think><answer>five</answer>", 0.0, 0.0),  # empty reasoning
        ("", "<think>2+2=4</think>", 0.0, 0.0),  # no words at all
        ("", "Hello world", 1.0, 0.0),  # no tags: the whole completion
        (R1_EVAL, "这是中文推理</think> The answer", 0.0, 1.0),  # prompt opened <think>
        ("", "<think>Привет world</think>", 0.5, 0.0),  # other scripts count, for neither
        ("", "<think>café résumé</think>", 1.0, 0.0),  # accented Latin is Latin
        ("", "<think>hello 世界", 1 / 3, 2 / 3),  # truncated inside the think block
    ],
)
def test_language_consistency(prompt, completion, en, zh):
    assert language_consistency([prompt], [completion]) == [pytest.approx(en)]
    assert language_consistency([prompt], [completion], language="zh") == [pytest.approx(zh)]


def test_language_rejects_unknown_language():
    with pytest.raises(ValueError, match="language"):
        language_share("hi", "fr")


def test_overlong_boundaries():
    fn = OverlongPenalty(max_len=20, cache_len=4)  # no penalty up to 16 tokens
    lens = [0, 16, 17, 18, 20, 21]
    got = fn([""] * 6, [""] * 6, completion_lens=lens, truncated=[False] * 6)
    assert got == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    half = OverlongPenalty(max_len=20, cache_len=4, penalty_factor=0.5)
    assert half([""] * 2, [""] * 2, completion_lens=[18, 30]) == [-0.25, -0.5]
    dapo = OverlongPenalty(max_len=20480, cache_len=4096)  # DAPO: 16,384 + 4,096
    got = dapo([""] * 4, [""] * 4, completion_lens=[16384, 16385, 18432, 20480])
    assert got == [0.0, -1 / 4096, -0.5, -1.0]


def test_overlong_bad_config_and_missing_lengths():
    for kw in (dict(max_len=10, cache_len=0), dict(max_len=10, cache_len=11)):
        with pytest.raises(ValueError, match="cache_len"):
            OverlongPenalty(**kw)
    with pytest.raises(ValueError, match="completion_lens"):
        OverlongPenalty(max_len=10, cache_len=2)([""], [""])
