"""What an extracted answer string means, and when two answers are the same.

Two comparisons share one reading of answers (`read`):
- `gold_matches(gold, pred)`: the training reward's, directed gold -> prediction. It is
  math-verify's `verify` (its rules: `x=3` and `3` match, a gold tuple accepts a prediction
  list in the same order, `9\\%` accepts `9`, text answers, ...) except for three faults of it:
  numbers in different bases are equal to it (it drops the subscript of `101_2`), units are
  dropped so `5 cm^2` equals `5 cm^3`, and decimals are rounded to 6 decimal places, so 1e-7 and
  2e-7 are equal while 0.3333333 is 1/3.
- `same_answer(a, b)`: answers_equivalent's (cons@k voting, `boxes="all_equal"`): symmetric and
  strict, true only when both parse to the same kind of object (number/expression, equation or
  inequality, tuple, set, interval, matrix) that math-verify finds equal in both directions, or
  both fail to parse and have the same normalised text. So `x=3` is not `3`, an ordered pair is
  not a set, `50\\%` is 0.5 (not 50).

Rules both follow (where they differ from math-verify, that is why):
- Numbers: decimals are exact (`0.1` is 1/10, so `0.5 = \\frac12` exactly). A decimal that
  approximates another value matches it only within a relative tolerance REL_TOL = 1e-9 (as
  Python's math.isclose): enough digits to be the value printed to double precision
  (`0.7071067811865476` is `\\frac{\\sqrt2}2`), not a rounding (`0.333333` is not `\\frac13`,
  `3.14` is not `\\pi`). Relative, so small quantities are compared on their significant digits
  (1.234567e-8 is not 1.234568e-8). Values without a decimal point are compared exactly (10^10
  is not 10^10+1).
- Bases: `101_2`, `(101)_{2}`, `1A_{16}` are numerals, compared as (digits, base): the base is
  part of the answer (a base question asks for the digits), so `101_2` is not `101_3` and not `5`.
  A base on one side only is ignored (`101_2` matches `101`). `123_2` (a digit too large for its
  base) does not parse and only matches its own text.
- Units: a trailing unit (`\\text{ cm}^2`, `\\mathrm{m/s}`, `5 cm^2`, `\\text{5 dollars}`) is split
  off; if both answers have one, the normalised units must be equal (no conversion: `50 cm` is
  not `0.5 m`); a unit on one side only is ignored (`5\\text{ cm}` matches `5`). Degrees and
  percent signs are left to math-verify.
- Decimal comma: `3,5` has two readings, the list {3, 5} and 3.5, and a prediction matches if
  either does; `1,000` (a 1-3 digit group, then 3 digits) is only a thousands separator; with a
  space (`3, 5`), brackets, or several commas it is a list. A gold answer is read as a list only
  (the English-language convention of the datasets). AMC-style `\\textbf{(C)}\\ 12` reads as
  the letter C or the value 12.
- LaTeX: `$...$`, `\\displaystyle`, thin spaces, a final period, `\\mathrm{e}` (Euler's e),
  `\\mathrm{i}`, scientific `1.2e-5` are normalised before math-verify parses.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

REL_TOL = 1e-9

_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
_SUBS = [  # (pattern, replacement) applied in order
    (r"^\$+|\$+$", ""),
    (r"\\displaystyle|\\!", ""),
    (r"(?<!\\)\\[,;:> ]|~", " "),
    (r"\\varnothing", r"\\emptyset"),
    (r"\\(?:mathrm|operatorname|textrm|text|rm)\s*\{\s*e\s*\}", "e"),
    (r"\\(?:mathrm|textrm|text|rm)\s*\{\s*i\s*\}", "i"),
    # scientific notation with a decimal mantissa or a signed exponent: 1.2e-5, 3e+8
    (r"(\d+\.\d+)[eE]([+-]?\d+)(?![\d.])|(\d+)[eE]([+-]\d+)(?![\d.])", r"\1\3\\times10^{\2\4}"),
    (r"(?<=\d)\.\s*$|\s*\.$", ""),  # a sentence's final period
]
_TEXT = r"\\(?:text|mbox|mathrm|textrm|rm)\s*\{([^{}]*)\}"
_POW = r"(?:\s*\^\s*(?:\{\s*-?\d+\s*\}|-?\d))?"
# the unit at the end of an answer: text groups (with powers, / and \cdot between them), or one
# bare unit word after a number and a space (`5 cm^2`, `12 km/h`)
_TEXT_UNIT = re.compile(rf"(?:\s*(?:/|\\cdot|\\times)?\s*{_TEXT}{_POW})+\s*$")
_BARE_WORD = (
    r"(?:[a-zA-Z]{3,}|cm|mm|km|m|g|kg|mg|s|h|hr|ft|in|yd|mi|lb|oz|mL|ml|L|J|N|W|V|Hz|Pa|eV)"
)
_BARE_UNIT = re.compile(rf"(?<=[\d}}])\s+({_BARE_WORD}{_POW}(?:/{_BARE_WORD}{_POW})*)\s*$")
_NUMBERISH = re.compile(r"^[-+]?(?:[\d.,]+|\\[dt]?frac\{\d+\}\{\d+\})$")
_TEXT_NUMBER = re.compile(r"^\\(?:text|mbox|textrm)\{\s*(-?[\d.,/]+)\s+([^{}\d]+)\}$")
_GENERIC_UNITS = {"unit", "units", "squareunit", "squareunits", "sq.unit", "sq.units", "unit^2"}
_NUMERAL = re.compile(r"^\(?(?:\\text\{)?([0-9A-Z]+)\}?\)?_\{?\s*(\d+)\s*\}?$")
_COMMA = re.compile(r"^[-+]?(\d+),(\d+)$")
_CHOICE = re.compile(r"^\\(?:textbf|text|mathrm)\{\s*\(([A-E])\)\s*\}\s*(.+)$")


@dataclass(frozen=True)
class Reading:
    """One way to read an answer: math-verify's parse (sympy objects, then raw strings)."""

    parsed: tuple
    decimal: bool  # the text has a decimal number: its value may be an approximation
    comma: bool = False  # the decimal-comma reading of `3,5` (never a gold's reading)

    @property
    def obj(self):
        return next(
            (p for p in self.parsed if isinstance(p, (sympy.Basic, sympy.MatrixBase))), None
        )


@dataclass(frozen=True)
class Answer:
    text: str  # normalised text (whitespace removed): what unparsed answers are compared by
    value: str  # the normalised text without its unit
    unit: str | None
    numeral: tuple[str, int] | None  # (digits without leading zeros, base)
    readings: tuple[Reading, ...]  # a gold is read by all but the decimal-comma one

    @property
    def judgeable(self) -> bool:
        return self.numeral is not None or any(r.obj is not None for r in self.readings)


def normalize(text: str) -> str:
    text = text.strip()
    for pat, rep in _SUBS:
        text = re.sub(pat, rep, text).strip()
    return text


def _unit_text(unit: str) -> str | None:
    u = re.sub(_TEXT, r"\1", unit)
    u = re.sub(r"[\s{}]|\\,", "", u).replace("\\cdot", "*")
    u = "/".join(w[:-1] if re.fullmatch(r"[a-z]{4,}s", w) else w for w in u.split("/"))
    return None if not u or u in _GENERIC_UNITS or u.rstrip("s") in _GENERIC_UNITS else u


def split_unit(text: str) -> tuple[str, str | None]:
    """(value, normalised unit or None)."""
    m = _TEXT_NUMBER.match(text)
    if m:
        return m.group(1), _unit_text(m.group(2))
    m = _TEXT_UNIT.search(text)
    if m and m.start() > 0 and re.search(r"[a-zA-Z]", "".join(re.findall(_TEXT, m.group(0)))):
        value = text[: m.start()].strip()
        if re.search(r"\d", value) and not value.endswith(("=", "\\")):
            return value, _unit_text(m.group(0))
    m = _BARE_UNIT.search(text)
    if m and _NUMBERISH.match(text[: m.start()].strip()):
        return text[: m.start()].strip(), _unit_text(m.group(1))
    return text, None


def _numeral(value: str) -> tuple[str, int] | None | bool:
    """(digits, base) of a numeral like 101_2; False when its digits do not fit its base."""
    m = _NUMERAL.match(value)
    if not m:
        return None
    digits, base = m.group(1).lstrip("0") or "0", int(m.group(2))
    if 2 <= base <= 36 and all(int(d, 36) < base for d in digits):
        return digits, base
    return False if digits.isdigit() else None


@functools.lru_cache(maxsize=8192)
def _parse(text: str) -> Reading:
    # Wrapping in \boxed{} makes math-verify read the whole string as one answer instead of
    # picking the last number out of it ("2\sqrt{3}" would otherwise parse as 2).
    parsed = tuple(parse("\\boxed{" + text + "}", _EXTRACTION, parsing_timeout=None))
    return Reading(parsed, bool(re.search(r"\d\.\d|(?<!\d)\.\d", text)))


@functools.lru_cache(maxsize=8192)
def read(text: str) -> Answer:
    """The readings of one extracted answer (see the module docstring)."""
    text = normalize(text)
    value, unit = split_unit(text)
    key = re.sub(r"\s+", "", text)
    numeral = _numeral(value)
    if numeral is False:
        return Answer(key, value, unit, None, ())
    if numeral:
        return Answer(key, value, unit, numeral, ())
    m = _CHOICE.match(value)
    readings = [_parse(t) for t in (m.groups() if m else [value])]
    m = _COMMA.match(value)
    if m and not (len(m.group(2)) == 3 and len(m.group(1)) <= 3 and m.group(1)[0] != "0"):
        readings.append(dataclasses.replace(_parse(value.replace(",", ".")), comma=True))
    return Answer(key, value, unit, None, tuple(readings))


# ---------------------------------------------------------------------------- comparison


def _exact(x):
    """x with every Float replaced by the exact rational its decimal digits denote."""
    if isinstance(x, sympy.MatrixBase):
        return x.applyfunc(_exact)
    if isinstance(x, sympy.Basic):
        return x.xreplace({f: sympy.Rational(str(f)) for f in x.atoms(sympy.Float)})
    return x


def _value(x):
    """x with percentages evaluated (math-verify keeps 50% as 50*(1/100), unevaluated)."""
    try:
        return _exact(x.doit())
    except Exception:
        return _exact(x)


def _close(a, b, rel_tol: float) -> bool:
    """Numbers (and tuples, sets, intervals, matrices of them) equal within rel_tol."""
    if isinstance(a, sympy.MatrixBase) or isinstance(b, sympy.MatrixBase):
        return (
            isinstance(a, sympy.MatrixBase)
            and isinstance(b, sympy.MatrixBase)
            and a.shape == b.shape
            and all(_close(x, y, rel_tol) for x, y in zip(a, b))
        )
    if isinstance(a, (sympy.Tuple, sympy.FiniteSet)) or isinstance(
        b, (sympy.Tuple, sympy.FiniteSet)
    ):
        if type(a) is not type(b) or len(a) != len(b):
            return False
        xs, ys = list(a.args), list(b.args)
        if isinstance(a, sympy.FiniteSet):
            xs, ys = sorted(xs, key=_sort_key), sorted(ys, key=_sort_key)
        return all(_close(x, y, rel_tol) for x, y in zip(xs, ys))
    if isinstance(a, sympy.Interval) or isinstance(b, sympy.Interval):
        return (
            isinstance(a, sympy.Interval)
            and isinstance(b, sympy.Interval)
            and (a.left_open, a.right_open) == (b.left_open, b.right_open)
            and _close(a.start, b.start, rel_tol)
            and _close(a.end, b.end, rel_tol)
        )
    try:
        if a.free_symbols or b.free_symbols or not (a.is_number and b.is_number):
            return False
        x, y = complex(sympy.N(a, 30)), complex(sympy.N(b, 30))
    except Exception:
        return False
    if x == y:
        return True
    return abs(x - y) <= rel_tol * max(abs(x), abs(y))


def _sort_key(x):
    try:
        return (0, float(sympy.N(x)), "")
    except Exception:
        return (1, 0.0, str(x))


def _verify(gold, pred) -> bool:
    return verify(gold, pred, timeout_seconds=None)


def _numerals_match(a: Answer, b: Answer) -> bool:
    def digits(x: Answer):
        if x.numeral:
            return x.numeral
        v = x.value
        return (v.lstrip("0") or "0", None) if re.fullmatch(r"[0-9A-Z]+", v) else None

    da, db = digits(a), digits(b)
    if da is None or db is None:
        return False
    return da[0] == db[0] and (da[1] is None or db[1] is None or da[1] == db[1])


def _units_clash(a: Answer, b: Answer) -> bool:
    return a.unit is not None and b.unit is not None and a.unit != b.unit


def gold_matches(gold: str, pred: str, rel_tol: float = REL_TOL) -> bool:
    """The training reward's check (directed; see the module docstring)."""
    g, p = read(gold), read(pred)
    if g.numeral or p.numeral:
        return _numerals_match(g, p) and not _units_clash(g, p)
    if _units_clash(g, p):
        return False
    if not g.judgeable:  # math_accuracy does not score these; here only the same text matches
        return g.text == p.text
    for gr in g.readings:
        for pr in p.readings:
            if gr.comma or gr.obj is None or pr.obj is None:
                continue
            if _verify([_exact(x) for x in gr.parsed], [_exact(x) for x in pr.parsed]):
                return True
            if (gr.decimal or pr.decimal) and _close(_value(gr.obj), _value(pr.obj), rel_tol):
                return True
    return False


def _kind(x) -> str:
    if isinstance(x, sympy.MatrixBase):
        return "matrix"
    if isinstance(x, (sympy.Rel, sympy.And, sympy.Or)):
        return "relation"
    if isinstance(x, sympy.Tuple):
        return "tuple"
    if isinstance(x, sympy.FiniteSet):
        return "set"
    if isinstance(x, sympy.Set):
        return "interval"  # intervals, unions, the empty set
    return "expression"


def same_answer(a: str, b: str, rel_tol: float = REL_TOL) -> bool:
    """answers_equivalent's check (symmetric and strict; see the module docstring)."""
    x, y = read(a), read(b)
    if x.text == y.text:
        return True
    if x.numeral or y.numeral:
        return _numerals_match(x, y) and not _units_clash(x, y)
    if _units_clash(x, y):
        return False
    for rx in x.readings:
        for ry in y.readings:
            if rx.obj is None or ry.obj is None:
                continue
            u, v = _value(rx.obj), _value(ry.obj)
            if _kind(u) != _kind(v):
                continue
            if _verify(u, v) and _verify(v, u):
                return True
            if (rx.decimal or ry.decimal) and _close(u, v, rel_tol):
                return True
    return False
