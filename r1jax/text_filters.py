"""R1's readability filters for sampled reasoning: mixed language, long paragraphs, repetition,
code blocks (R1 [V2 B.3.2-3]); thresholds in `Filters`, 0 / False turns one off. Used by
rejection sampling (r1jax.rejection), whose docstring gives the order the checks run in."""

from __future__ import annotations

import collections
import dataclasses
import re
import unicodedata

from r1jax.rewards.format import reasoning_text
from r1jax.rewards.language import _WORD_RE, language_share

_PARAGRAPH_RE = re.compile(r"\n\s*\n")


def is_empty(completion: str) -> bool:
    """Nothing but whitespace."""
    return not completion.strip()


def mixed_language(reasoning: str, *, language: str = "en", min_share: float = 0.95) -> bool:
    """True when the share of `language` words in `reasoning` is below `min_share`.

    Text without any words (e.g. pure arithmetic) is not mixed. min_share=0 disables the check.
    """
    if min_share <= 0 or _WORD_RE.search(reasoning) is None:
        return False
    return language_share(reasoning, language) < min_share


def longest_paragraph(text: str) -> tuple[int, int]:
    """(characters, words) of the longest paragraph; paragraphs are separated by blank lines."""
    paras = [p.strip() for p in _PARAGRAPH_RE.split(text)]
    return max(len(p) for p in paras), max(len(p.split()) for p in paras)


def long_paragraph(text: str, *, max_chars: int = 0, max_words: int = 0) -> bool:
    """True when some paragraph has more than `max_chars` characters or `max_words` words."""
    chars, words = longest_paragraph(text)
    return bool((max_chars and chars > max_chars) or (max_words and words > max_words))


def repeated_ngram_fraction(text: str, n: int) -> float:
    """Fraction of the word n-grams of `text` that repeat an earlier one (0.0 if none exist).

    "a b a b a b" with n=2: n-grams ab ba ab ba ab, 3 of 5 seen before -> 0.6.
    """
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def max_line_repeats(text: str, min_chars: int = 1) -> int:
    """How often the most frequent line (stripped, >= min_chars characters) occurs; 0 if none."""
    lines = [s for s in (line.strip() for line in text.splitlines()) if len(s) >= min_chars]
    return max(collections.Counter(lines).values()) if lines else 0


def repetitive(
    text: str,
    *,
    ngram: int = 8,
    max_ngram_frac: float = 0.0,
    max_repeats: int = 0,
    min_line_chars: int = 8,
) -> bool:
    """True when the repeated `ngram` fraction exceeds `max_ngram_frac` or a line of at least
    `min_line_chars` characters occurs more than `max_repeats` times (0 disables each)."""
    if max_ngram_frac and repeated_ngram_fraction(text, ngram) > max_ngram_frac:
        return True
    return bool(max_repeats and max_line_repeats(text, min_line_chars) > max_repeats)


def has_code_block(text: str) -> bool:
    return "```" in text


def normalize(text: str) -> str:
    """Dedup key: NFKC, whitespace runs collapsed to one space, ends stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


@dataclasses.dataclass(frozen=True)
class Filters:
    """Thresholds of the readability filters; 0 / False disables one (see module docstring)."""

    drop_truncated: bool = True
    language: str = "en"
    min_language_share: float = 0.95
    max_paragraph_chars: int = 0
    max_paragraph_words: int = 0
    ngram: int = 8
    max_repeated_ngram_frac: float = 0.0
    max_line_repeats: int = 0
    min_line_chars: int = 8
    drop_code_blocks: bool = False

    def text_reason(self, prompt: str, completion: str) -> str | None:
        """The first readability filter the completion fails, or None."""
        reasoning = reasoning_text(prompt, completion)
        if mixed_language(reasoning, language=self.language, min_share=self.min_language_share):
            return "mixed_language"
        if long_paragraph(
            completion, max_chars=self.max_paragraph_chars, max_words=self.max_paragraph_words
        ):
            return "long_paragraph"
        if repetitive(
            completion,
            ngram=self.ngram,
            max_ngram_frac=self.max_repeated_ngram_frac,
            max_repeats=self.max_line_repeats,
            min_line_chars=self.min_line_chars,
        ):
            return "repetition"
        if self.drop_code_blocks and has_code_block(reasoning):
            return "code_block"
        return None
