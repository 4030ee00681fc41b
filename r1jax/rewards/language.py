"""R1 language-consistency reward: Num(Words_target) / Num(Words) in the chain of thought.

R1 adds it in stage-1 RL and all-scenario RL to stop English/Chinese mixing (r1_paper.md section 3).
Words: a run of Latin letters is one English word; every CJK ideograph is one Chinese word (Chinese
has no spaces); a run of letters of any other script is one word of neither language. Digits,
punctuation and math symbols are not words. Reasoning with no words at all scores 0.0.
"""

from __future__ import annotations

import re

from r1jax.rewards.format import reasoning_text

_LATIN = "A-Za-z\u00c0-\u024f"
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_WORD_RE = re.compile(rf"(?P<en>[{_LATIN}]+)|(?P<zh>[{_CJK}])|(?P<other>[^\W\d_{_LATIN}{_CJK}]+)")
LANGUAGES = ("en", "zh")


def language_share(text: str, language: str = "en") -> float:
    """Fraction of the words in `text` that are in `language` ('en' or 'zh'); 0.0 if no words."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    total = hits = 0
    for m in _WORD_RE.finditer(text):
        total += 1
        hits += m.lastgroup == language
    return hits / total if total else 0.0


def language_consistency(
    prompts: list[str], completions: list[str], *, language: str = "en", **fields
) -> list[float]:
    """Share of target-language words inside `<think>` (the whole completion if untagged)."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    return [language_share(reasoning_text(p, c), language) for p, c in zip(prompts, completions)]
