"""Math accuracy: extract a final answer and compare it to the gold answer symbolically.

Extraction is ours (it only finds *where* the answer is: the last `\\boxed{...}`/`\\fbox{...}` with
nested braces, the last `<answer>...</answer>` block, a GSM8K `#### 72` line, or the last number).
Parsing and equivalence are math-verify's (LaTeX -> sympy via latex2sympy2_extended): fractions,
decimals, percentages, roots, pi, intervals, tuples, sets, and units/text are handled there.

math-verify guards parsing and comparison with `signal.alarm`, which raises off the main thread
(verl#5635, trl#5281). We switch that off (`parsing_timeout=None`, `timeout_seconds=None`): the hard
timeout comes from `r1jax.rewards.pool`, which runs each item in a killable worker process.
Called in-process (pool workers=0, evaluation scripts), nothing bounds a pathological input.
"""

from __future__ import annotations

import functools
import logging
import re

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from r1jax.data.sources import boxed_contents

# We disable math-verify's alarm-based timeouts on purpose (see module docstring); drop the
# warning it logs about that once per process.
for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(lambda r: "Timeout is disabled" not in r.getMessage())

_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_GSM8K_RE = re.compile(r"####\s*([^\n]*)")
_NUMBER_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")
# `\text{5 dollars}`: a number wrapped in text together with its unit.
_TEXT_NUMBER_RE = re.compile(r"^\\(?:text|mbox|textrm)\{\s*(-?[\d.,/]+)\s*[^{}\d]*\}$")


def _last_number(text: str) -> str | None:
    nums = _NUMBER_RE.findall(text)
    return nums[-1].replace(",", "") if nums else None


def extract_answer(text: str, *, fallback: str = "last_number") -> str | None:
    """The final answer string in `text`, or None.

    Priority: the last `<answer>` block (its last box if it has one, else its content), else the
    last `\\boxed{}`/`\\fbox{}`, else a GSM8K `#### x` line, else `fallback`: "last_number" (the
    last number in the text), "whole" (the stripped text itself; for bare gold answers) or "none".
    """
    if fallback not in ("last_number", "whole", "none"):
        raise ValueError(
            f"extract_answer: fallback must be last_number|whole|none, got {fallback!r}"
        )
    tags = _ANSWER_RE.findall(text)
    if tags:
        boxes = boxed_contents(tags[-1])
        ans = boxes[-1] if boxes else tags[-1]
        return ans.strip() or None
    boxes = boxed_contents(text)
    if boxes:
        return boxes[-1].strip() or None
    gsm = _GSM8K_RE.findall(text)
    if gsm:
        return gsm[-1].strip().replace(",", "") or None
    if fallback == "last_number":
        return _last_number(text)
    if fallback == "whole":
        return text.strip() or None
    return None


@functools.lru_cache(maxsize=8192)
def parse_answer(answer: str) -> tuple:
    """math-verify parse of an extracted answer: (sympy objects..., fallback strings...)."""
    answer = answer.strip()
    m = _TEXT_NUMBER_RE.match(answer)
    if m:
        answer = m.group(1)
    # Wrapping in \boxed{} makes math-verify read the whole string as one answer instead of
    # picking the last number out of it ("2\sqrt{3}" would otherwise parse as 2).
    return tuple(parse("\\boxed{" + answer + "}", _EXTRACTION, parsing_timeout=None))


def is_parsed(parsed: tuple) -> bool:
    """True when math-verify produced at least one sympy object (not only a raw string)."""
    return any(isinstance(p, (sympy.Basic, sympy.MatrixBase)) for p in parsed)


def _verify(gold: tuple, pred: tuple) -> bool:
    return bool(gold) and bool(pred) and verify(list(gold), list(pred), timeout_seconds=None)


def answers_equivalent(a: str | None, b: str | None) -> bool:
    """Symmetric equivalence of two extracted answers ("0.5" ~ "\\frac{1}{2}" ~ "50\\%")."""
    if a is None or b is None:
        return False
    a, b = a.strip(), b.strip()
    if not a or not b:
        return False
    if a == b:
        return True
    pa, pb = parse_answer(a), parse_answer(b)
    return _verify(pa, pb) or _verify(pb, pa)


def _golds(fields: dict) -> list:
    for key in ("answer", "solution"):
        if key in fields:
            return list(fields[key])
    raise ValueError("math_accuracy needs the per-item field 'answer' (or 'solution')")


def math_accuracy(
    prompts: list[str],
    completions: list[str],
    *,
    last_number_fallback: bool = False,
    correct_value: float = 1.0,
    wrong_value: float = 0.0,
    **fields,
) -> list[float | None]:
    """1.0 when the completion's final answer equals the gold `answer`, else 0.0; None when the
    gold answer cannot be parsed (it is then excluded, not scored 0).

    By default the completion must box its answer or put it in `<answer>` tags (R1: "the answer
    must be in a specified format"); `last_number_fallback=True` also accepts the last number.
    `correct_value`/`wrong_value` give e.g. DAPO's +1/-1.
    """
    golds = _golds(fields)
    fallback = "last_number" if last_number_fallback else "none"
    out: list[float | None] = []
    for completion, gold in zip(completions, golds):
        gold_str = extract_answer(str(gold), fallback="whole")
        gold_parsed = parse_answer(gold_str) if gold_str else ()
        if not is_parsed(gold_parsed):
            out.append(None)
            continue
        pred = extract_answer(completion, fallback=fallback)
        ok = pred is not None and _verify(gold_parsed, parse_answer(pred))
        out.append(correct_value if ok else wrong_value)
    return out
