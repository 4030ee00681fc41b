"""R1-Zero format reward: `<think> reasoning </think> <answer> answer </answer>`.

Templates that prefill the thinking tag (the R1 README forces outputs to start with "<think>\\n";
TinyZero's prompt ends with "<think>"; R1-Distill chat templates do the same) leave the opening tag
in the prompt, not in the completion. We then treat it as present: a flat format reward for such
templates is pain point 3 of the anchor study (anchors_pytorch.md, section e).
"""

from __future__ import annotations

import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_STRICT_RE = re.compile(
    r"\A\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*\Z", re.DOTALL
)
_LENIENT_RE = re.compile(r"<think>.*?</think>.*?<answer>.*?</answer>", re.DOTALL)


def prompt_opens_think(prompt: str) -> bool:
    """True when the prompt's last `<think>` is not closed: the completion continues inside it.

    The R1-Zero template mentions "<think> </think>" in its instructions; that pair is closed, so
    it does not count.
    """
    i = prompt.rfind(THINK_OPEN)
    return i >= 0 and THINK_CLOSE not in prompt[i:]


def with_prompt_prefix(prompt: str, completion: str) -> str:
    """The completion, with the `<think>` the prompt already opened put back in front."""
    return THINK_OPEN + completion if prompt_opens_think(prompt) else completion


def is_strict_format(text: str) -> bool:
    """Exactly one think block then one answer block; only whitespace around and between."""
    m = _STRICT_RE.match(text)
    if m is None:
        return False
    return not any(t in m["think"] or t in m["answer"] for t in _TAGS)


def is_lenient_format(text: str) -> bool:
    """A think block followed (anywhere later) by an answer block."""
    return _LENIENT_RE.search(text) is not None


def reasoning_text(prompt: str, completion: str) -> str:
    """The text inside the think block (up to the end if it is never closed); the whole
    completion when it has no think tags at all."""
    text = with_prompt_prefix(prompt, completion)
    start = text.find(THINK_OPEN)
    end = text.find(THINK_CLOSE, max(start, 0))
    if start < 0 and end < 0:
        return completion
    start = start + len(THINK_OPEN) if start >= 0 else 0
    return text[start : end if end >= 0 else len(text)]


def format_reward(
    prompts: list[str], completions: list[str], *, strict: bool = True, **fields
) -> list[float]:
    """1.0 when the completion (with a prompt-opened `<think>` restored) has the R1-Zero format."""
    check = is_strict_format if strict else is_lenient_format
    return [float(check(with_prompt_prefix(p, c))) for p, c in zip(prompts, completions)]
