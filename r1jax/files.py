"""The one path layer: every file r1jax writes goes through here, local or on GCS (`gs://`).

Paths are `etils.epath.Path`, so a workdir may be a local directory or a bucket. Writes that a
reader must never see half-done (summaries, datasets, journals rewritten in place) go to a
temporary name first and are renamed into place (`write_text`, `write_json`, `write_jsonl`);
appends (`append_jsonl`) are for logs whose torn last line the reader drops (`read_jsonl`). A
write that fails (a full disk) leaves the old file as it was and no temporary file behind.

One run per workdir: `WorkdirLock` (WORKDIR/r1jax.lock), taken by the command line before JAX
is imported, so a second run in the same workdir stops at once with a one-line error instead of
interleaving its metrics and checkpoints with the first's. It is `fcntl.flock` on a local file:
the kernel drops it when its process dies, however it dies, so the lock of a killed run is taken
over (with a warning naming the dead holder); the file holds "pid N on HOST" for the messages.
In a multi-host job only process 0 takes it; on an object store (gs://) nothing can be locked,
which a warning says.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import socket
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np
from etils import epath

from r1jax.errors import StateError

log = logging.getLogger(__name__)
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
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(p)
    except BaseException:
        if tmp.exists():  # e.g. a full disk: no half-written file left behind
            tmp.unlink()
        raise
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


LOCK_NAME = "r1jax.lock"
# Where cluster launchers put a process's index before JAX has started (r1jax.distributed).
RANK_VARIABLES = ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "TPU_WORKER_ID", "CLOUD_TPU_TASK_ID")


def launch_rank(process_id: int = -1) -> int:
    """This process's index in the job, known before JAX starts: --process_id, else a cluster
    launcher's variable, else 0."""
    if process_id >= 0:
        return process_id
    for var in RANK_VARIABLES:
        if os.environ.get(var, "").strip().isdigit():
            return int(os.environ[var])
    return 0


class WorkdirLock:
    """`with WorkdirLock(workdir):` holds the workdir's lock; StateError if a live run holds it.
    workdir None (no workdir) or rank > 0 holds nothing."""

    def __init__(self, workdir: str | None, rank: int = 0):
        self.workdir, self.rank = workdir, rank
        self._fd: int | None = None
        self._created = False

    @property
    def path(self) -> str:
        return os.path.join(str(path(self.workdir)), LOCK_NAME)

    def __enter__(self):
        if self.workdir is None or self.rank != 0:
            return self
        if is_remote(self.workdir):
            log.warning(
                "%s is on an object store, where no lock is possible: nothing stops a second "
                "run in the same workdir",
                self.workdir,
            )
            return self
        wd = os.path.dirname(self.path)
        self._created = not os.path.isdir(wd)
        os.makedirs(wd, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "pid unknown"
            os.close(fd)
            raise StateError(
                f"workdir {wd} is in use by another run ({holder}; lock {self.path}); wait for "
                "it to end, or use another --workdir"
            ) from None
        previous = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if previous:  # written by a run that died without releasing (SIGKILL, a crash)
            log.warning("taking over %s from a run that is gone (%s)", self.path, previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # released in order: nothing for the next run to warn about
        wd = os.path.dirname(self.path)
        if self._created and os.listdir(wd) == [LOCK_NAME]:  # a run that wrote nothing: no dir
            os.remove(self.path)
            os.rmdir(wd)
        os.close(self._fd)
        self._fd = None
