"""Math accuracy: extract a final answer and compare it to the gold answer.

Extraction is here (it only finds *where* the answer is: `\\boxed{...}`/`\\fbox{...}` with nested
braces, the last `<answer>...</answer>` block, a GSM8K `#### 72` line, or the last number).
What answers mean and when they match is r1jax.rewards.answers: math-verify's parsing and
rules (fractions, decimals, percentages, roots, pi, intervals, tuples, sets, text), with our
fixes for bases, units, decimal precision and decimal commas, and a strict symmetric check for
answers_equivalent (cons@k voting).

Several boxes (`boxes`): "final" (the default) takes the last box of the answer's scope (the last
`<answer>` block if there is one, else the whole text), as the MATH / Qwen / DeepSeek evaluation
scripts do, so our numbers stay comparable with theirs and a reasoning trace that boxes a
candidate and then corrects itself is judged on its correction. "all_equal" requires every box in
scope to be the same answer (answers_equivalent) and gives no answer otherwise, so hedging with
several different boxes never scores.

math-verify guards parsing and comparison with `signal.alarm`, which raises off the main thread
(verl#5635, trl#5281). We switch that off (`parsing_timeout=None`, `timeout_seconds=None`): the hard
timeout comes from `r1jax.rewards.pool`, which runs each item in a killable worker process.
Called in-process (pool workers=0, evaluation scripts), nothing bounds a pathological input.
"""

from __future__ import annotations

import logging
import re

from r1jax.data.sources import boxed_contents
from r1jax.rewards.answers import REL_TOL, gold_matches, read, same_answer

# We disable math-verify's alarm-based timeouts on purpose (see module docstring); drop the
# warning it logs about that once per process.
for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(lambda r: "Timeout is disabled" not in r.getMessage())

BOX_RULES = ("final", "all_equal")
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_GSM8K_RE = re.compile(r"####\s*([^\n]*)")
_NUMBER_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")


def _last_number(text: str) -> str | None:
    nums = _NUMBER_RE.findall(text)
    return nums[-1].replace(",", "") if nums else None


def extract_answer(text: str, *, fallback: str = "last_number", boxes: str = "final") -> str | None:
    """The final answer string in `text`, or None.

    Priority: the last `<answer>` block (its boxes if it has any, else its content), else the
    `\\boxed{}`/`\\fbox{}`es of the text, else a GSM8K `#### x` line, else `fallback`:
    "last_number" (the last number in the text), "whole" (the stripped text itself; for bare gold
    answers) or "none". Several boxes: `boxes` (module docstring).
    """
    if fallback not in ("last_number", "whole", "none"):
        raise ValueError(
            f"extract_answer: fallback must be last_number|whole|none, got {fallback!r}"
        )
    if boxes not in BOX_RULES:
        raise ValueError(f"extract_answer: boxes must be one of {BOX_RULES}, got {boxes!r}")
    tags = _ANSWER_RE.findall(text)
    scope = tags[-1] if tags else text
    found = [b.strip() for b in boxed_contents(scope)]
    if found:
        last = found[-1]
        if boxes == "all_equal" and not all(
            b == last or answers_equivalent(b, last) for b in found
        ):
            return None
        return last or None
    if tags:
        return tags[-1].strip() or None
    gsm = _GSM8K_RE.findall(text)
    if gsm:
        return gsm[-1].strip().replace(",", "") or None
    if fallback == "last_number":
        return _last_number(text)
    if fallback == "whole":
        return text.strip() or None
    return None


def answers_equivalent(a: str | None, b: str | None) -> bool:
    """True when two extracted answers are the same answer: symmetric and strict
    ("0.5" ~ "\\frac{1}{2}" ~ "50\\%", but "x=3" !~ "3" and "(1,2)" !~ "\\{1,2\\}");
    r1jax.rewards.answers.same_answer."""
    if a is None or b is None:
        return False
    a, b = a.strip(), b.strip()
    if not a or not b:
        return False
    return a == b or same_answer(a, b)


def answers_agree(prompts: list[str], completions: list[str], **fields) -> list[float]:
    """1.0 where the completion (an extracted answer) is answers_equivalent to the field
    `answer`: the equivalence check as a reward function, so the evaluation's vote can run it in
    the reward pool, under its timeout."""
    return [float(answers_equivalent(c, a)) for c, a in zip(completions, _golds(fields))]


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
    boxes: str = "final",
    rel_tol: float = REL_TOL,
    correct_value: float = 1.0,
    wrong_value: float = 0.0,
    **fields,
) -> list[float | None]:
    """1.0 when the completion's final answer equals the gold `answer`, else 0.0; None when the
    gold answer cannot be parsed (it is then excluded, not scored 0).

    By default the completion must box its answer or put it in `<answer>` tags (R1: "the answer
    must be in a specified format"); `last_number_fallback=True` also accepts the last number.
    `boxes`: the several-boxes rule (module docstring). `rel_tol`: how close a decimal must be to
    the value it approximates (r1jax.rewards.answers). `correct_value`/`wrong_value` give e.g.
    DAPO's +1/-1.
    """
    golds = _golds(fields)
    fallback = "last_number" if last_number_fallback else "none"
    out: list[float | None] = []
    for completion, gold in zip(completions, golds):
        gold_str = extract_answer(str(gold), fallback="whole")
        if not gold_str or not read(gold_str).judgeable:
            out.append(None)
            continue
        pred = extract_answer(completion, fallback=fallback, boxes=boxes)
        ok = pred is not None and gold_matches(gold_str, pred, rel_tol)
        out.append(correct_value if ok else wrong_value)
    return out
