"""Reward worker processes: start, serve items, die cleanly; their temp dirs.

Workers are fresh interpreters (`python -c ...`, fork+exec, like multiprocessing's 'spawn'): the
parent holds JAX threads, so it is never forked without exec. We exec ourselves rather than use
multiprocessing's contexts: spawn re-imports the trainer's `__main__` (and with it JAX) in every
worker and every replacement, forkserver imports it into its server (a process-wide setting
shared with any other multiprocessing use). Each worker gets its own session (so
killpg reaches anything it started), dies with the thread that started it (PR_SET_PDEATHSIG),
and rebuilds reward functions from specs (registry name + kwargs), never from pickled closures.

Each worker's TMPDIR is r1jax-reward-worker-<owner pid>-<owner start time>-*, removed when the
worker is killed. `remove_stale_dirs` (run when a pool starts) removes such dirs whose owner
process is gone (a SIGKILLed trainer) and keeps those of live processes (a concurrent run).
"""

from __future__ import annotations

import collections
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from r1jax.rewards.registry import get_reward_fn, spec_key

log = logging.getLogger(__name__)
_BOOT = (
    "import json, os, sys; sys.path[:0] = json.loads(os.environ.pop('R1JAX_REWARD_SYSPATH'));"
    "from r1jax.rewards.workers import worker_main; worker_main(int(sys.argv[1]))"
)
AUTO_MAX_WORKERS = 8
DIR_PREFIX = "r1jax-reward-worker-"


@dataclass(frozen=True)
class Task:
    """One reward-function call on one item. `fields` holds this item's values (not lists)."""

    name: str
    prompt: str
    completion: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None  # None: the pool's timeout_s


class Outcome(NamedTuple):
    value: float | None
    status: str  # "ok" | "timeout" | "exception" | "crash"
    notes: tuple = ()  # ((counter, increment), ...): what the function counted for this item


def evaluate_task(fn, task: Task) -> tuple[float | None, tuple]:
    """Call a reward function on one item and check that it returned one float or None. A
    function may carry `counters` (running totals of events it saw in its process, e.g. the
    sandbox's caps hit): the item's increments travel back with its value as notes."""
    before = dict(getattr(fn, "counters", None) or {})
    fields = {k: [v] for k, v in task.fields.items()}
    out = fn([task.prompt], [task.completion], **fields)
    if len(out) != 1:
        raise ValueError(f"reward {task.name!r} returned {len(out)} values for 1 item")
    after = getattr(fn, "counters", None) or {}
    notes = tuple((k, after[k] - before.get(k, 0)) for k in sorted(after))
    return (None if out[0] is None else float(out[0])), notes


def auto_workers() -> int:
    """Workers for `workers=0`: one per usable CPU, at most AUTO_MAX_WORKERS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, AUTO_MAX_WORKERS))


def _owner_tag(pid: int) -> str | None:
    """ "<pid>-<start time>" of a live process, None if it is gone. The start time (clock ticks
    after boot) tells a reused pid apart; without /proc only liveness is known ("<pid>-0")."""
    if os.path.exists("/proc/self/stat"):
        try:
            with open(f"/proc/{pid}/stat") as f:  # the name field may hold spaces and parens
                return f"{pid}-{f.read().rsplit(')', 1)[1].split()[19]}"
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return f"{pid}-0"


def remove_stale_dirs(tmp: str | None = None) -> list[str]:
    """Removes worker temp dirs (in `tmp`, default the temp dir) whose owner process is gone and
    returns their paths. Dirs of live processes and names in other formats are left alone."""
    tmp = tmp or tempfile.gettempdir()
    try:
        names = os.listdir(tmp)
    except OSError:
        return []
    pattern = re.compile(re.escape(DIR_PREFIX) + r"(\d+)-(\d+)-\w+")
    removed = []
    for name in names:
        m = pattern.fullmatch(name)
        if m and _owner_tag(int(m[1])) not in (f"{m[1]}-{m[2]}", f"{m[1]}-0"):
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
            removed.append(os.path.join(tmp, name))
    if removed:
        log.warning("removed %d reward worker dir(s) of dead processes in %s", len(removed), tmp)
    return removed


def _set_pdeathsig() -> None:
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker still exits when its connection closes


def worker_main(fd: int) -> None:
    """Worker loop: receive ("preload", specs), build them, reply "ready"; then, for each
    ("run", index, Task) in order, reply "ok" or "err". Building a function first is framed by
    "build" and "start" (its time is not the item's: the pool's clock for an item starts when
    the previous one is answered, or at "start")."""
    _set_pdeathsig()
    conn = Connection(fd)
    fns: dict[str, Any] = {}

    def build(name: str, kwargs: Mapping[str, Any], index: int | None = None):
        key = spec_key(name, kwargs)
        if key not in fns:
            if index is not None:
                conn.send(("build", index))
            fns[key] = get_reward_fn(name, **kwargs)
            if index is not None:
                conn.send(("start", index))
        return fns[key]

    try:
        for name, kwargs in conn.recv()[1]:
            try:
                build(name, kwargs)
            except Exception:
                pass  # reported by the first item that uses it
        conn.send(("ready", os.getpid()))
        while (msg := conn.recv())[0] != "stop":
            _, index, task = msg
            try:
                fn = build(task.name, task.kwargs, index)
                conn.send(("ok", index, *evaluate_task(fn, task)))
            except Exception:
                conn.send(("err", index, traceback.format_exc(limit=8)))
    except (EOFError, OSError):
        return  # the pool is gone


class Item(NamedTuple):
    index: int
    sent: float
    timeout_s: float


class Worker:
    """One worker process: starting until it reports "ready", then serving `queued` in order."""

    def __init__(self, preload: list, send_timeout_s: float):
        parent_sock, child_sock = socket.socketpair()
        # A send to a worker that stopped reading fails after this instead of blocking the pool.
        tv = struct.pack("ll", int(send_timeout_s), 0)
        parent_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        env = dict(os.environ, R1JAX_REWARD_SYSPATH=json.dumps(sys.path))
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        # The worker's temporary files (e.g. code sandboxes) go here, removed when it is killed.
        self.tmp = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{_owner_tag(os.getpid())}-")
        os.chmod(self.tmp, 0o711)  # sandboxes running as `nobody` must traverse it
        env["TMPDIR"] = self.tmp
        fd = child_sock.fileno()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(fd)],
                pass_fds=(fd,),
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            parent_sock.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        finally:
            child_sock.close()
        self.conn = Connection(parent_sock.detach())
        try:
            self.conn.send(("preload", preload))
        except OSError:
            pass  # it died already: seen as end-of-file by the dispatcher
        self.spawned = time.monotonic()
        self.ready = False
        self.queued: collections.deque[Item] = collections.deque()  # sent, not answered
        self.started = 0.0  # when the first queued item's call began (0: building its function)

    @property
    def waiting(self) -> bool:
        """Starting or busy: the dispatcher waits for a message from it."""
        return not self.ready or bool(self.queued)

    def deadline(self, setup_timeout_s: float) -> float:
        if not self.ready:
            return self.spawned + setup_timeout_s
        if self.started:
            return self.started + self.queued[0].timeout_s
        return self.queued[0].sent + setup_timeout_s  # building the function, or not started

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.conn.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
