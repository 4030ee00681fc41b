"""The one path layer: every file r1jax writes goes through here, local or on GCS (`gs://`).

Paths are `etils.epath.Path`, so a workdir may be a local directory or a bucket. Writes that a
reader must never see half-done (summaries, datasets, journals rewritten in place) go to a
temporary name first and are renamed into place (`write_text`, `write_json`, `write_jsonl`);
appends (`append_jsonl`) are for logs whose torn last line the reader drops (`read_jsonl`).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np
from etils import epath

PathLike = str | epath.PathLike


def path(p: PathLike) -> epath.Path:
    """An epath.Path; local paths are made absolute (orbax wants absolute paths)."""
    p = epath.Path(p)
    return p if is_remote(p) else epath.Path(p.expanduser().resolve())


def is_remote(p: PathLike) -> bool:
    return str(p).startswith(("gs://", "s3://"))


def _default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (np.ndarray, tuple, set, frozenset)):
        return list(x.tolist() if isinstance(x, np.ndarray) else x)
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


def dumps(obj: Any, **kw) -> str:
    """JSON with NumPy scalars and arrays as plain numbers and lists; NaN/inf as null."""
    return json.dumps(_finite(obj), default=_default, ensure_ascii=False, **kw)


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_text(p: PathLike, text: str) -> epath.Path:
    """Writes `text` to a temporary file beside `p`, then renames it into place."""
    p = path(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{p.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(p)
    return p


def write_json(p: PathLike, obj: Any) -> epath.Path:
    return write_text(p, dumps(obj, indent=2) + "\n")


def write_jsonl(p: PathLike, rows: Iterable[dict]) -> epath.Path:
    return write_text(p, "".join(dumps(r) + "\n" for r in rows))


def append_jsonl(p: PathLike, rows: Iterable[dict]) -> None:
    p = path(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(dumps(r) + "\n" for r in rows)
    if not text:
        return
    if is_remote(p):  # object stores have no append: rewrite (logs here stay small)
        write_text(p, (p.read_text(encoding="utf-8") if p.exists() else "") + text)
        return
    with p.open("a", encoding="utf-8") as f:
        f.write(text)


def read_json(p: PathLike) -> Any:
    p = path(p)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}, line {e.lineno}: invalid JSON: {e.msg}") from None


def read_jsonl(p: PathLike, *, torn_tail_ok: bool = True) -> list[dict]:
    """Rows of a JSON-lines file ([] if it does not exist). A last line that does not parse was
    cut short by an interruption and is dropped (torn_tail_ok); anywhere else it is an error
    naming the file and line."""
    p = path(p)
    if not p.exists():
        return []
    lines = p.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if torn_tail_ok and i == len(lines):
                break
            raise ValueError(f"{p}, line {i}: not valid JSON") from None
    return rows


def remove_if_empty(p: PathLike) -> None:
    """Removes the directory `p` if it exists and holds nothing (a run that failed at set-up)."""
    p = path(p)
    if p.is_dir() and not any(p.iterdir()):
        p.rmdir()
