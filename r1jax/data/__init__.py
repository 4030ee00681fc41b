"""Data for r1jax: procedural tasks, real datasets and a resumable iterator.

An example is a plain dict `{"id": str, "question": str, "answer": str, ...}` plus task fields
(countdown adds `nums`, `target`; MATH adds `level`, `type`, ...). Prompt templates live in
templates.py; rewards read `answer` and the task fields.
"""

from __future__ import annotations

from collections.abc import Sequence

from r1jax.data import (
    embedded,  # noqa: F401  (registers the embedded task)
    tfds_io,
)
from r1jax.data.iterator import DataIterator, IndexPermutation
from r1jax.data.sources import (
    NAMED_SOURCES,
    SCHEMAS,
    DataError,
    convert_rows,
    gsm8k_answer,
    last_boxed,
    load_named,
    read_file,
    schema_for_tfds,
    split_files,
    write_jsonl,
    write_parquet,
)
from r1jax.data.tasks import TASKS, Arithmetic, Countdown, ProceduralTask, make_task, register_task

__all__ = [
    "NAMED_SOURCES",
    "SCHEMAS",
    "TASKS",
    "Arithmetic",
    "Countdown",
    "DataError",
    "DataIterator",
    "IndexPermutation",
    "ProceduralTask",
    "gsm8k_answer",
    "last_boxed",
    "load_dataset",
    "make_task",
    "read_file",
    "register_task",
    "write_jsonl",
    "write_parquet",
]

_FILE_PREFIXES = ("jsonl:", "parquet:")


def load_dataset(
    spec: str,
    split: str = "train",
    *,
    seed: int = 0,
    data_dir: str | None = None,
    path: str | None = None,
    schema: str | None = None,
    **task_kwargs,
) -> Sequence[dict]:
    """Resolves a dataset spec to a sequence of examples.

    - a registered procedural task ("countdown", "arithmetic"): `seed` and `task_kwargs`
      (test_size, task options) go to `make_task`; returns a lazy, index-addressable split.
      Other sources ignore `seed` (shuffling belongs to DataIterator).
    - a named dataset ("gsm8k", "math", "math500", "aime2024"): from local files of the hub
      repo's schema when `path` is given (a file, or a directory with `split.jsonl` /
      `split-*.parquet`), else from TFDS's `huggingface:` namespace prepared in `data_dir`.
    - "jsonl:PATH" / "parquet:PATH": our own schema (question, answer, optional id, any extra
      fields) unless `schema` names another; '{split}' in PATH is replaced by the split.
    - "tfds:NAME": a prepared TFDS dataset in `data_dir`, e.g. "tfds:huggingface:openai/gsm8k/main";
      known hub repos get their schema, anything else the canonical one unless `schema` says.
    """
    if spec in TASKS:
        _reject(spec, data_dir=data_dir, path=path, schema=schema)
        return make_task(spec, seed=seed, **task_kwargs).split(split)
    _reject(spec, **task_kwargs)
    if spec in NAMED_SOURCES:
        _reject(spec, schema=schema)
        return load_named(spec, split, data_dir=data_dir, path=path)
    if spec.startswith(_FILE_PREFIXES):
        _reject(spec, data_dir=data_dir, path=path)
        fmt, file_path = spec.split(":", 1)
        files = split_files(file_path, split, formats=(fmt,))
        return [ex for f in files for ex in read_file(f, schema or "canonical", f"{f.stem}")]
    if spec.startswith("tfds:"):
        _reject(spec, path=path)
        name = spec[len("tfds:") :]
        rows = tfds_io.read_tfds(name, split, data_dir=data_dir)
        return convert_rows(rows, schema or schema_for_tfds(name), f"{name}/{split}")
    raise DataError(
        f"unknown dataset {spec!r} (config.data.name); expected a task {sorted(TASKS)}, a "
        f"named dataset {sorted(NAMED_SOURCES)}, or jsonl:PATH, parquet:PATH, tfds:NAME"
    )


def _reject(spec: str, **kwargs) -> None:
    given = sorted(k for k, v in kwargs.items() if v is not None)
    if given:
        raise TypeError(f"load_dataset({spec!r}) does not take {given}")
