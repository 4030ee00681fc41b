"""Real datasets (GSM8K, MATH, MATH-500, AIME 2024, your own) mapped to plain example dicts.

A *schema* turns one raw row of a dataset into `{"id", "question", "answer", ...}`; a *reader*
gets raw rows from a JSONL file, a parquet file or a prepared TFDS data_dir (see tfds_io.py)
and reports bad rows by file and line / row and field. Named datasets bind a schema to its
Hugging Face repo; they load from TFDS's `huggingface:` namespace in `data_dir`, or from local
JSONL/parquet files with the repo's columns (`path=`). Nothing is downloaded here.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from r1jax import files
from r1jax.data import tfds_io


class DataError(ValueError):
    """A bad row; the message names the file (or dataset), the line / row and the field."""


class FieldError(ValueError):
    """Raised by a schema for one row; the reader adds where the row came from."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field {field!r}: {problem}")
        self.field = field


# ------------------------------------------------------------------------------ answer extraction


def gsm8k_answer(solution: str) -> str | None:
    """GSM8K gold: the text after the last '####', whitespace and thousands commas removed."""
    if "####" not in solution:
        return None
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])\s*")


def boxed_contents(text: str) -> list[str]:
    """Contents of every complete `\\boxed{...}` / `\\fbox{...}` in `text`, in order: the one
    `\\boxed{}` extractor of r1jax (gold answers of MATH here, completions in rewards.math).

    Braces nest; a backslash escapes the next character (`\\{`, `\\}` and `\\\\` are text, not
    grouping). The brace-less `\\boxed 5` takes the next token (up to whitespace or `$`). A box
    that never closes (a truncated completion) is not an answer.
    """
    out = []
    for m in _BOX.finditer(text):
        i = m.end()
        if i < len(text) and text[i] != "{":
            token = re.match(r"[^\s$]*", text[i:]).group(0)
            if token:
                out.append(token)
            continue
        depth, j = 0, i
        while j < len(text):
            c = text[j]
            if c == "\\":
                j += 2  # the escaped character is text
                continue
            depth += {"{": 1, "}": -1}.get(c, 0)
            if depth == 0:
                out.append(text[i + 1 : j])
                break
            j += 1
    return out


def last_boxed(text: str) -> str | None:
    """Contents of the last complete box in `text` (see boxed_contents), or None. A MATH gold
    answer is its solution's last box (the convention of the dataset's own grader); completions
    have a configurable rule instead (rewards.math `boxes`)."""
    boxes = boxed_contents(text)
    return boxes[-1] if boxes else None


# ---------------------------------------------------------------------------------------- schemas


def _field(row: dict, *names: str) -> Any:
    """The first present, non-null field among `names` (alternative spellings of one field)."""
    for name in names:
        if row.get(name) is not None:
            return row[name]
    raise FieldError(names[0], "missing" + (f" (also tried {names[1:]})" if names[1:] else ""))


def _text(row: dict, *names: str) -> str:
    value = _field(row, *names)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FieldError(names[0], f"expected a string, got {type(value).__name__}")
    return str(value)


def _canonical(row: dict, default_id: str) -> dict:
    # Our own schema (e.g. exported procedural tasks): all fields are kept.
    return {
        **row,
        "id": default_id if row.get("id") is None else str(row["id"]),
        "question": _text(row, "question"),
        "answer": _text(row, "answer"),
    }


def _gsm8k(row: dict, default_id: str) -> dict:
    solution = _text(row, "answer")
    answer = gsm8k_answer(solution)
    if not answer:
        raise FieldError("answer", "no final answer after '####'")
    question = _text(row, "question")
    return {
        "id": default_id,
        "task": "gsm8k",
        "question": question,
        "answer": answer,
        "solution": solution,
    }


def _math(row: dict, default_id: str) -> dict:
    solution = _text(row, "solution")
    answer = last_boxed(solution)
    if answer is None:
        raise FieldError("solution", "no complete \\boxed{...} answer")
    return {
        "id": default_id,
        "task": "math",
        "question": _text(row, "problem"),
        "answer": answer,
        "solution": solution,
        "level": row.get("level"),
        "type": row.get("type"),
    }


def _math500(row: dict, default_id: str) -> dict:
    out = {
        "id": str(row.get("unique_id") or default_id),
        "task": "math500",
        "question": _text(row, "problem"),
        "answer": _text(row, "answer"),
    }
    for key in ("subject", "level", "unique_id", "solution"):
        if key in row:
            out[key] = row[key]
    return out


def _aime2024(row: dict, default_id: str) -> dict:
    # HuggingFaceH4/aime_2024 uses lower case (id, problem, answer); Maxwell-Jia/AIME_2024 uses
    # ID, Problem, Answer (an int).
    ident = row.get("id", row.get("ID"))
    out = {
        "id": default_id if ident is None else str(ident),
        "task": "aime2024",
        "question": _text(row, "problem", "Problem"),
        "answer": _text(row, "answer", "Answer"),
    }
    for key in ("solution", "Solution", "url", "year"):
        if key in row:
            out[key.lower()] = row[key]
    return out


def _sft(row: dict, default_id: str) -> dict:
    # Supervised pairs (cold start, rejection sampling, distillation): prompt and completion text.
    completion = _text(row, "completion")
    if not completion.strip():
        raise FieldError("completion", "empty completion (nothing to train on)")
    return {
        **row,
        "id": default_id if row.get("id") is None else str(row["id"]),
        "prompt": _text(row, "prompt"),
        "completion": completion,
    }


SCHEMAS: dict[str, Callable[[dict, str], dict]] = {
    "canonical": _canonical,
    "sft": _sft,
    "gsm8k": _gsm8k,
    "math": _math,
    "math500": _math500,
    "aime2024": _aime2024,
}


@dataclasses.dataclass(frozen=True)
class NamedSource:
    schema: str
    hf_repo: str  # Where the data comes from; with hf_config, the TFDS `huggingface:` name.
    hf_config: str | None = None
    split_map: tuple[tuple[str, str], ...] = ()  # (our split, the repo's split)

    @property
    def tfds_name(self) -> str:
        return f"huggingface:{self.hf_repo}" + (f"/{self.hf_config}" if self.hf_config else "")

    def repo_split(self, split: str) -> str:
        return dict(self.split_map).get(split, split)


NAMED_SOURCES: dict[str, NamedSource] = {
    "gsm8k": NamedSource("gsm8k", "openai/gsm8k", "main"),
    "math": NamedSource("math", "DigitalLearningGmbH/MATH-lighteval"),
    "math500": NamedSource("math500", "HuggingFaceH4/MATH-500"),
    # The hub set has a single 'train' split of 30 problems; it is an evaluation set for us.
    "aime2024": NamedSource("aime2024", "HuggingFaceH4/aime_2024", split_map=(("test", "train"),)),
}


def convert_rows(rows: Iterable[tuple[str, dict]], schema: str, id_prefix: str) -> list[dict]:
    """Applies a schema to (location, row) pairs; a bad row raises DataError at its location."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}; known: {sorted(SCHEMAS)}")
    convert, out = SCHEMAS[schema], []
    for index, (where, row) in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object, got {type(row).__name__}")
        try:
            out.append(convert(row, f"{id_prefix}/{index}"))
        except FieldError as e:
            raise DataError(f"{where}: {e} ({schema} schema)") from None
    return out


# ------------------------------------------------------------------------------------ local files


def _jsonl_rows(path: pathlib.Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}, line {lineno}: invalid JSON: {e.msg} (column {e.colno})"
                ) from None
            yield f"{path}, line {lineno}", row


def _parquet_rows(path: pathlib.Path) -> Iterator[tuple[str, Any]]:
    for i, row in enumerate(pq.read_table(path).to_pylist()):
        yield f"{path}, row {i}", row


def read_file(
    path: str | pathlib.Path, schema: str = "canonical", id_prefix: str | None = None
) -> list[dict]:
    """Reads a .parquet file (by suffix) or a JSONL file through a schema into examples."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    rows = _parquet_rows(path) if path.suffix == ".parquet" else _jsonl_rows(path)
    return convert_rows(rows, schema, id_prefix or path.stem)


def split_files(
    path: str | pathlib.Path, split: str, formats: Sequence[str] = ("jsonl", "parquet")
) -> list[pathlib.Path]:
    """The data files of `split`: `path` itself if it is a file ('{split}' in it is filled in),
    else the files under the directory named `split.EXT` or `split-*.EXT` (the hub's parquet
    layout, e.g. main/test-00000-of-00001.parquet), searched recursively."""
    path = pathlib.Path(str(path).replace("{split}", split))
    if path.is_file():
        return [path]
    patterns = [f"{split}{tail}.{ext}" for ext in formats for tail in ("", "-*")]
    found = sorted({p for pattern in patterns for p in path.rglob(pattern)})
    if not found:
        raise FileNotFoundError(f"no {split!r} data at {path} (want a file, or {patterns} in it)")
    return found


def write_jsonl(path: str | pathlib.Path, examples: Iterable[dict]) -> None:
    files.write_jsonl(path, examples)


def write_parquet(path: str | pathlib.Path, examples: Sequence[dict]) -> None:
    pq.write_table(pa.Table.from_pylist(list(examples)), path)


# ---------------------------------------------------------------------------------- named sources


def load_named(
    name: str, split: str, *, data_dir: str | None = None, path: str | None = None
) -> list[dict]:
    """GSM8K, MATH, MATH-500 or AIME 2024 from local files (`path`) or a TFDS data_dir."""
    source = NAMED_SOURCES[name]
    repo_split = source.repo_split(split)
    if path is not None:
        files = split_files(path, repo_split)
        return [ex for f in files for ex in read_file(f, source.schema, f"{name}/{split}")]
    rows = tfds_io.read_tfds(source.tfds_name, repo_split, data_dir=data_dir)
    return convert_rows(rows, source.schema, f"{name}/{split}")


# Other hub copies of the same data, recognised by `tfds:huggingface:...` specs.
OTHER_REPOS = {
    "Maxwell-Jia/AIME_2024": "aime2024",
    "EleutherAI/hendrycks_math": "math",
    "hendrycks/competition_math": "math",
    "lighteval/MATH": "math",
}


def schema_for_tfds(tfds_name: str) -> str:
    """The schema of a known hub repo given as a TFDS name; 'canonical' for anything else."""

    def repo_key(name: str) -> str:
        return tfds_io.local_tfds_name(name).split("/")[0]

    known = {s.hf_repo: s.schema for s in NAMED_SOURCES.values()} | OTHER_REPOS
    by_key = {repo_key(f"huggingface:{repo}"): schema for repo, schema in known.items()}
    return by_key.get(repo_key(tfds_name), "canonical")
