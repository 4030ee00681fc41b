"""Prompt templates: plain functions from a question (or an example dict) to the prompt string.

Every template here returns the exact text the policy is conditioned on; the completion the
policy samples starts right after it. Sources, quoted verbatim:

- ``r1zero``: DeepSeek-R1 v1 Table 1 (see /work/shared/reference/r1_paper.md §2).
- ``tinyzero_countdown``: TinyZero ``examples/data_preprocess/countdown.py::make_prefix``.
- ``chatml``: the Qwen2/2.5 chat format (``<|im_start|>role\\n...<|im_end|>\\n``).
- ``qwen_math``: Qwen2.5-Math ``evaluation/utils.py`` prompt type ``"qwen-boxed"``.
- ``r1_eval``: DeepSeek-R1 README usage recommendations (no system prompt, the boxed
  instruction in the user turn, the output forced to start with ``"<think>\\n"``).
- ``chatml`` and ``render_chat_template`` (a checkpoint's own jinja chat template) live in
  r1jax/chat_template.py, beside the tokenizer that applies them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from r1jax.chat_template import Messages, chatml, render_chat_template  # noqa: F401 (re-export)

R1ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>. User: {question}. Assistant:"
)

COUNTDOWN_SYSTEM = (
    "You are a helpful assistant. You first thinks about the reasoning process in the mind and "
    "then provides the user with the answer."
)
_COUNTDOWN_TASK = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
    "arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in "
    "<think> </think> tags. And return the final answer in <answer> </answer> tags, for example "
    "<answer> (1 + 2) / 3 </answer>."
)
COUNTDOWN_PREFILL = "Let me solve this step by step.\n<think>"

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_MATH_SYSTEM = "You are a helpful assistant."
# Default system turns that Qwen's own chat templates insert when the conversation has none.
QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN25_MATH_DEFAULT_SYSTEM = BOXED_INSTRUCTION
THINK_PREFIX = "<think>\n"


def r1zero(question: str) -> str:
    """R1-Zero template, verbatim; ``prompt`` is replaced by the question (the ". " stays)."""
    return R1ZERO_TEMPLATE.format(question=question)


def tinyzero_countdown(nums: Sequence[int], target: int, style: str = "base") -> str:
    """TinyZero Countdown prompt, verbatim, for ``template_type`` ``"base"`` or ``"qwen-instruct"``.

    ``{numbers}`` is the Python list repr (``[44, 19, 35]``). The qwen-instruct text has a space
    after ``user\\n`` (``"user\\n Using the numbers"``): TinyZero's source has it, so we keep it.
    Both styles end with the prefilled ``"Let me solve this step by step.\\n<think>"``.
    """
    numbers = [int(n) for n in nums]  # repr of a tuple or NumPy array would differ from a list's
    task = _COUNTDOWN_TASK.format(numbers=numbers, target=int(target))
    if style == "base":
        head = (
            "A conversation between User and Assistant. The user asks a question, and the "
            "Assistant solves it. The assistant first thinks about the reasoning process in the "
            "mind and then provides the user with the answer.\n"
        )
        return f"{head}User: {task}\nAssistant: {COUNTDOWN_PREFILL}"
    if style == "qwen-instruct":
        messages = [
            {"role": "system", "content": COUNTDOWN_SYSTEM},
            {"role": "user", "content": " " + task},
        ]
        return chatml(messages) + COUNTDOWN_PREFILL
    raise ValueError(f"tinyzero_countdown: style must be 'base' or 'qwen-instruct', got {style!r}")


def qwen_math(question: str, system: str | None = QWEN_MATH_SYSTEM) -> str:
    """Qwen2.5-Math "qwen-boxed" prompt: the boxed instruction on a new line in the user turn.

    Verbatim from Qwen2.5-Math's evaluation code, including its system turn "You are a helpful
    assistant."; ``system=None`` drops the system turn. (Qwen2.5-Math's tokenizer template would
    instead insert the boxed instruction itself as the default system turn, and Dr. GRPO's
    "qwen_math" puts it only there; neither is this function.)
    """
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": f"{question}\n{BOXED_INSTRUCTION}"})
    return chatml(messages)


def r1_eval(question: str, render: Callable[..., str] | None = None) -> str:
    """R1 README evaluation prompt: no system turn, instruction appended, output opens "<think>\\n".

    ``render(messages, add_generation_prompt=True)`` formats the chat: ``chatml`` by default, or
    e.g. a tokenizer's ``apply_chat_template`` for DeepSeek's own format. Newer R1 templates
    already end their generation prompt with "<think>\\n"; it is then not added twice.
    """
    render = chatml if render is None else render
    messages = [{"role": "user", "content": f"{question}\n{BOXED_INSTRUCTION}"}]
    prompt = render(messages, add_generation_prompt=True)
    return prompt if prompt.endswith(THINK_PREFIX) else prompt + THINK_PREFIX


def plain(question: str) -> str:
    """The question as-is (for base models that were trained with the prompt in the data)."""
    return question


# --- registry: templates over example dicts --------------------------------------------------


def _question(example: Mapping[str, Any], name: str) -> str:
    # GSM8K-style sets call the field "question", MATH-style sets "problem".
    for key in ("question", "problem"):
        if key in example:
            return str(example[key])
    raise KeyError(
        f"template {name!r} needs example['question'] (or 'problem'); got keys {sorted(example)}"
    )


def _field(example: Mapping[str, Any], key: str, name: str) -> Any:
    if key not in example:
        raise KeyError(f"template {name!r} needs example[{key!r}]; got keys {sorted(example)}")
    return example[key]


_TEMPLATES: dict[str, Callable[..., str]] = {
    "r1zero": r1zero,
    "tinyzero_countdown": tinyzero_countdown,
    "qwen_math": qwen_math,
    "r1_eval": r1_eval,
    "plain": plain,
}
TEMPLATE_NAMES = tuple(_TEMPLATES)


def get_template(name: str, **kwargs: Any) -> Callable[[Mapping[str, Any]], str]:
    """Returns ``example -> prompt`` for a registered template; kwargs go to the template.

    Example fields: ``question`` (or ``problem``) for all but ``tinyzero_countdown``, which reads
    ``nums`` and ``target``. E.g. ``get_template("tinyzero_countdown", style="qwen-instruct")``.
    """
    if name not in _TEMPLATES:
        raise KeyError(f"unknown prompt template {name!r}; known: {list(TEMPLATE_NAMES)}")
    fn = _TEMPLATES[name]
    try:  # fail here, not on the first example, when an option is misspelt
        inspect.signature(fn).bind_partial(**kwargs)
    except TypeError as e:
        raise TypeError(f"prompt template {name!r}: bad options {sorted(kwargs)}: {e}") from None
    if name == "tinyzero_countdown":
        return lambda ex: fn(_field(ex, "nums", name), _field(ex, "target", name), **kwargs)
    return lambda ex: fn(_question(ex, name), **kwargs)
