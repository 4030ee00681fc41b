"""Prompt templates pinned to the verbatim texts of their sources."""

import jinja2
import numpy as np
import pytest

from r1jax.data import templates as T

# DeepSeek-R1 v1 Table 1 (r1_paper.md §2); "prompt" is the slot for the question.
R1ZERO_TABLE1 = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>. User: prompt. Assistant:"
)


def tinyzero_make_prefix(dp, template_type):
    """TinyZero examples/data_preprocess/countdown.py::make_prefix (texts verbatim)."""
    target = dp["target"]
    numbers = dp["nums"]
    if template_type == "base":
        prefix = f"""A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the answer.
User: Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.
Assistant: Let me solve this step by step.
<think>"""  # noqa: E501
    elif template_type == "qwen-instruct":
        prefix = f"""<|im_start|>system\nYou are a helpful assistant. You first thinks about the reasoning process in the mind and then provides the user with the answer.<|im_end|>\n<|im_start|>user\n Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.<|im_end|>\n<|im_start|>assistant\nLet me solve this step by step.\n<think>"""  # noqa: E501
    return prefix


# Qwen2.5-Math evaluation/utils.py PROMPT_TEMPLATES["qwen-boxed"][0].
QWEN_BOXED = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{input}\nPlease reason step by step, and put your final answer within "
    "\\boxed{{}}.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_r1zero_is_table1_verbatim():
    q = "What is 2 + 3?"
    assert T.r1zero(q) == R1ZERO_TABLE1.replace("User: prompt.", f"User: {q}.")
    assert T.r1zero(q).endswith("User: What is 2 + 3?. Assistant:")


@pytest.mark.parametrize("style", ["base", "qwen-instruct"])
def test_countdown_matches_tinyzero(style):
    ex = {"target": 98, "nums": [44, 19, 35]}
    want = tinyzero_make_prefix(ex, style)
    assert T.tinyzero_countdown(ex["nums"], ex["target"], style) == want
    # Arrays / tuples / NumPy ints from a generator must still print as a list of ints.
    got = T.get_template("tinyzero_countdown", style=style)(
        {"target": np.int64(98), "nums": np.array([44, 19, 35])}
    )
    assert got == want


def test_countdown_base_text():
    got = T.tinyzero_countdown([3, 7, 25], 46)
    assert got.splitlines()[1].startswith("User: Using the numbers [3, 7, 25], create an equation")
    assert got.endswith("</answer>.\nAssistant: Let me solve this step by step.\n<think>")
    with pytest.raises(ValueError, match="style"):
        T.tinyzero_countdown([1, 2], 3, style="chat")


def test_chatml():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U\nV"}]
    assert T.chatml(msgs) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU\nV<|im_end|>\n<|im_start|>assistant\n"
    )
    assert T.chatml(msgs[1:], add_generation_prompt=False) == "<|im_start|>user\nU\nV<|im_end|>\n"
    # A default system turn is added only when the chat has none.
    assert T.chatml(msgs, default_system="D") == T.chatml(msgs)
    assert T.chatml(msgs[1:], default_system="D").startswith("<|im_start|>system\nD<|im_end|>\n")
    with pytest.raises(ValueError, match=r"messages\[1\]"):
        T.chatml([msgs[0], {"role": "user"}])


def test_qwen_math_is_qwen_boxed():
    q = "Find $x$ if $2x = 6$."
    assert T.qwen_math(q) == QWEN_BOXED.format(input=q)
    assert T.qwen_math(q, system=None) == (
        f"<|im_start|>user\n{q}\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_r1_eval():
    q = "What is 1+1?"
    assert T.r1_eval(q) == (
        "<|im_start|>user\nWhat is 1+1?\nPlease reason step by step, and put your final answer "
        "within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )

    def deepseek(messages, add_generation_prompt=True):  # R1's own format, already opens <think>
        return "<｜User｜>" + messages[0]["content"] + "<｜Assistant｜><think>\n"

    got = T.r1_eval(q, render=deepseek)
    assert got.startswith("<｜User｜>What is 1+1?\nPlease reason")
    assert got.endswith("}.<｜Assistant｜><think>\n") and got.count("<think>") == 1


def test_registry():
    ex = {"question": "Q?", "answer": "4"}
    assert T.get_template("plain")(ex) == "Q?"
    assert T.get_template("r1zero")(ex) == T.r1zero("Q?")
    assert T.get_template("qwen_math", system=None)(ex) == T.qwen_math("Q?", system=None)
    assert T.get_template("r1_eval")({"problem": "Q?"}) == T.r1_eval("Q?")
    assert set(T.TEMPLATE_NAMES) == {
        "r1zero",
        "tinyzero_countdown",
        "qwen_math",
        "r1_eval",
        "plain",
    }
    with pytest.raises(KeyError, match="unknown prompt template 'r1'.*r1zero"):
        T.get_template("r1")
    with pytest.raises(KeyError, match=r"needs example\['question'\].*\['answer'\]"):
        T.get_template("r1zero")({"answer": "4"})
    with pytest.raises(KeyError, match=r"needs example\['nums'\]"):
        T.get_template("tinyzero_countdown")({"target": 3})
    with pytest.raises(TypeError, match="'r1zero': bad options"):
        T.get_template("r1zero", styl="base")


def test_template_extensions():
    tpl = "{% generation %}{{ messages[0]['content'] | tojson }}{% endgeneration %}"
    assert T.render_chat_template(tpl, [{"role": "user", "content": "<é>"}]) == '"<é>"'
    tpl = (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('need a user turn') }}{% endif %}"
    )
    with pytest.raises(jinja2.exceptions.TemplateError, match="need a user turn"):
        T.render_chat_template(tpl, [{"role": "assistant", "content": "x"}])
