"""TinyZero Countdown reward (verl/utils/reward_score/countdown.py @95df88f), re-implemented.

Scoring, as TinyZero: 0 when there is no `<answer>...</answer>`; `format_score` (0.1) when the
last answer's numbers are not exactly the given ones (each used once, all used, compared as sorted
`\\d+` matches), when it has a character outside `[\\d+\\-*/().\\s]`, when it fails to evaluate,
or when the value is off; `score` (1.0) when |value - target| < 1e-5.

Where we deliberately differ:
- We score the completion alone; TinyZero receives prompt + response and first splits at
  "Assistant:" / "<|im_start|>assistant" (returning 0 when neither is there). Not needed here.
- TinyZero keeps only the last line (`split('\\n')[-1]`) before looking for the tag, so a correct
  answer followed by a newline or any trailing text scores 0. `last_line_only=True` reproduces
  that; the default is off because it punishes formatting noise (a trailing newline before EOS)
  rather than the arithmetic, which is what the reward is meant to teach.
- TinyZero calls `eval` (with builtins removed). We parse with `ast` and evaluate only numbers,
  + - * /, unary +/- and parentheses, so `**` and `//` (which pass TinyZero's character filter)
  score `format_score` here; `9**9**9` would hang TinyZero's `eval`. Inputs longer than
  MAX_EQUATION_CHARS or nested deeper than MAX_DEPTH also score `format_score`.
As in TinyZero the tag regex has no DOTALL: an answer spanning lines is not found.
"""

from __future__ import annotations

import ast
import operator
import re

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>")
_ALLOWED_RE = re.compile(r"^[\d+\-*/().\s]+$")
MAX_EQUATION_CHARS = 1000
MAX_DEPTH = 100
MAX_ABS_VALUE = 1e30
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def extract_equation(completion: str, *, last_line_only: bool = False) -> str | None:
    """The stripped content of the last `<answer>...</answer>` (on one line), or None."""
    text = completion.split("\n")[-1] if last_line_only else completion
    matches = _ANSWER_RE.findall(text)
    return matches[-1].strip() if matches else None


def uses_numbers_exactly(equation: str, numbers) -> bool:
    """Every given number used exactly once and no other number (TinyZero's check)."""
    try:
        used = sorted(int(n) for n in re.findall(r"\d+", equation))
        return used == sorted(int(n) for n in numbers)
    except (ValueError, TypeError):  # e.g. a 5000-digit literal exceeds int() limits
        return False


def _eval(node: ast.AST, depth: int):
    if depth > MAX_DEPTH:
        raise ValueError("expression nested too deeply")
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, depth + 1))
    if isinstance(node, ast.BinOp) and (type(node.op) in _BINOPS or isinstance(node.op, ast.Div)):
        left, right = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        value = (
            left / right if isinstance(node.op, ast.Div) else _BINOPS[type(node.op)](left, right)
        )
        if abs(value) > MAX_ABS_VALUE:
            raise ValueError("intermediate value too large")
        return value
    raise ValueError(f"disallowed syntax: {type(node).__name__}")


def safe_eval(equation: str) -> int | float | None:
    """Value of an arithmetic expression (Python semantics: `/` is true division), or None if it
    is not one, divides by zero, or is too long/deep/large. Never calls `eval`."""
    if len(equation) > MAX_EQUATION_CHARS or not _ALLOWED_RE.match(equation):
        return None
    try:
        tree = ast.parse(equation.strip(), mode="eval")
        return _eval(tree.body, 0)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, MemoryError, OverflowError):
        return None


def countdown_score(
    completion: str,
    target,
    numbers,
    *,
    format_score: float = 0.1,
    score: float = 1.0,
    last_line_only: bool = False,
) -> float:
    """TinyZero's `compute_score` for one completion (see module docstring)."""
    equation = extract_equation(completion, last_line_only=last_line_only)
    if equation is None:
        return 0.0
    if not uses_numbers_exactly(equation, numbers):
        return format_score
    value = safe_eval(equation)
    if value is None:
        return format_score
    return score if abs(value - float(target)) < 1e-5 else format_score


def countdown_reward(
    prompts: list[str],
    completions: list[str],
    *,
    format_score: float = 0.1,
    score: float = 1.0,
    last_line_only: bool = False,
    **fields,
) -> list[float]:
    """Countdown reward; per-item fields `target` and `nums` (or `numbers`)."""
    if "target" not in fields or not ("nums" in fields or "numbers" in fields):
        raise ValueError("countdown_reward needs per-item fields 'target' and 'nums'")
    nums = fields["nums"] if "nums" in fields else fields["numbers"]
    kw = dict(format_score=format_score, score=score, last_line_only=last_line_only)
    return [countdown_score(c, t, n, **kw) for c, t, n in zip(completions, fields["target"], nums)]
