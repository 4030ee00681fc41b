"""Worker-process pool for reward functions, with a hard per-item timeout.

Why not ProcessPoolExecutor: it cannot kill one hung task. Here every item is dispatched on its
own; a worker that overruns is SIGKILLed with its process group and replaced, the item gets
`timeout_value`, a counter goes up and the run goes on. A worker that dies mid-item (segfault,
OOM kill, `os._exit`) is replaced likewise and the item gets `exception_value`; an exception
raised by the reward function gets `exception_value` too. Both values default to 0.0 and may be
None (the item is then excluded from the advantage like any other None).

Workers are fresh interpreters (`python -c ...`, fork+exec, like multiprocessing's 'spawn'): the
parent holds JAX threads, so it is never forked without exec. We exec ourselves rather than use
multiprocessing's spawn context because spawn re-imports the trainer's `__main__` (and with it
JAX) in every worker and every replacement. Each worker gets its own session (so killpg reaches
anything it started), dies with the pool's dispatcher thread (PR_SET_PDEATHSIG), and rebuilds
reward functions from specs (registry name + kwargs), never from pickled closures.

Tasks carry one item each. The timeout clock of an item starts when the worker reports that it
began calling the function, so importing heavy modules (sympy) and building the function fall
under the separate, generous `setup_timeout_s`.

`workers=0` runs everything in the calling process (for debugging): exceptions are still caught
and counted, but nothing enforces timeouts.
"""

from __future__ import annotations

import collections
import ctypes
import json
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, NamedTuple

from r1jax.rewards.registry import get_reward_fn, spec_key

log = logging.getLogger(__name__)
_BOOT = (
    "import json, os, sys; sys.path[:0] = json.loads(os.environ.pop('R1JAX_REWARD_SYSPATH'));"
    "from r1jax.rewards.pool import _worker_main; _worker_main(int(sys.argv[1]))"
)
_MAX_START_FAILURES = 3
_LOGGED_ERRORS = 5


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
    status: str  # "ok" | "timeout" | "exception"


def evaluate_task(fn, task: Task) -> float | None:
    """Call a reward function on one item and check that it returned one float or None."""
    fields = {k: [v] for k, v in task.fields.items()}
    out = fn([task.prompt], [task.completion], **fields)
    if len(out) != 1:
        raise ValueError(f"reward {task.name!r} returned {len(out)} values for 1 item")
    return None if out[0] is None else float(out[0])


def _set_pdeathsig() -> None:
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker still exits when its connection closes


def _worker_main(fd: int) -> None:
    """Worker loop: receive ("run", index, Task), reply "start", then "ok" or "err"."""
    _set_pdeathsig()
    conn = Connection(fd)
    conn.send(("ready", os.getpid()))
    fns: dict[str, Any] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        _, index, task = msg
        try:
            key = spec_key(task.name, task.kwargs)
            if key not in fns:
                fns[key] = get_reward_fn(task.name, **task.kwargs)
            conn.send(("start", index))
            conn.send(("ok", index, evaluate_task(fns[key], task)))
        except Exception:
            conn.send(("err", index, traceback.format_exc(limit=8)))


class _Worker:
    def __init__(self):
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ, R1JAX_REWARD_SYSPATH=json.dumps(sys.path))
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        # The worker's temporary files (e.g. code sandboxes) go here, removed when it is killed.
        self.tmp = tempfile.mkdtemp(prefix="r1jax-reward-worker-")
        os.chmod(self.tmp, 0o711)  # sandboxes running as `nobody` must traverse it
        env["TMPDIR"] = self.tmp
        fd = child_sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(fd)],
            pass_fds=(fd,),
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.ready = False
        self.index: int | None = None  # item in flight
        self.sent = self.started = 0.0
        self.timeout_s = 0.0

    def deadline(self, setup_timeout_s: float) -> float:
        if self.started:
            return self.started + self.timeout_s
        return self.sent + setup_timeout_s

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.conn.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class RewardPool:
    """Runs `Task`s in `workers` processes; `run` blocks, `submit` returns a Future."""

    def __init__(
        self,
        workers: int = 4,
        *,
        timeout_s: float = 10.0,
        timeout_value: float | None = 0.0,
        exception_value: float | None = 0.0,
        setup_timeout_s: float = 120.0,
    ):
        if workers < 0 or timeout_s <= 0 or setup_timeout_s <= 0:
            raise ValueError("RewardPool: need workers >= 0 and positive timeouts")
        self.workers, self.timeout_s, self.setup_timeout_s = workers, timeout_s, setup_timeout_s
        self.timeout_value, self.exception_value = timeout_value, exception_value
        self.counters = collections.Counter(
            items=0, timeouts=0, exceptions=0, none_values=0, crashes=0, restarts=0
        )
        self._fns: dict[str, Any] = {}  # in-process mode cache
        self._jobs: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = None
        if workers:
            # Workers are started by (and die with, via PDEATHSIG) the dispatcher thread.
            self._thread = threading.Thread(target=self._loop, name="reward-pool", daemon=True)
            self._thread.start()

    # ----------------------------------------------------------------------------- public API

    def submit(self, tasks: Sequence[Task]) -> Future:
        """Schedule `tasks`; the Future resolves to a list of `Outcome`, in order."""
        if self._closed:
            raise RuntimeError("RewardPool is closed")
        fut: Future = Future()
        if not self.workers:
            fut.set_running_or_notify_cancel()
            fut.set_result([self._run_inline(t) for t in tasks])
        else:
            self._jobs.put((list(tasks), fut))
        return fut

    def run(self, tasks: Sequence[Task]) -> list[Outcome]:
        return self.submit(tasks).result()

    def map(
        self,
        name: str,
        prompts: Sequence[str],
        completions: Sequence[str],
        *,
        kwargs: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        **fields,
    ) -> list[float | None]:
        """Convenience: one reward function over a batch, per-item fields as lists."""
        tasks = [
            Task(name, p, c, {k: v[i] for k, v in fields.items()}, dict(kwargs or {}), timeout_s)
            for i, (p, c) in enumerate(zip(prompts, completions, strict=True))
        ]
        return [o.value for o in self.run(tasks)]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------------------ internals

    def _record(self, task: Task, outcome: Outcome, detail: str = "") -> Outcome:
        self.counters["items"] += 1
        if outcome.status == "timeout":
            self.counters["timeouts"] += 1
        elif outcome.status == "exception":
            self.counters["exceptions"] += 1
            if self.counters["exceptions"] <= _LOGGED_ERRORS:
                log.warning(
                    "reward %r raised (item gets %r):\n%s", task.name, outcome.value, detail
                )
        if outcome.value is None:
            self.counters["none_values"] += 1
        return outcome

    def _run_inline(self, task: Task) -> Outcome:
        try:
            key = spec_key(task.name, task.kwargs)
            if key not in self._fns:
                self._fns[key] = get_reward_fn(task.name, **task.kwargs)
            return self._record(task, Outcome(evaluate_task(self._fns[key], task), "ok"))
        except Exception:
            outcome = Outcome(self.exception_value, "exception")
            return self._record(task, outcome, traceback.format_exc(limit=8))

    def _loop(self) -> None:
        self._start_failures = 0
        try:
            self._pool = [_Worker() for _ in range(self.workers)]
            error = None
        except Exception as e:  # e.g. cannot exec the interpreter: fail every job, loudly
            self._pool, error = [], e
        try:
            while (job := self._jobs.get()) is not None:
                tasks, fut = job
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    if error is not None:
                        raise RuntimeError(f"reward workers failed to start: {error}") from error
                    fut.set_result(self._run_job(tasks))
                except BaseException as e:  # the caller gets it from the Future
                    fut.set_exception(e)
        finally:
            for w in self._pool:
                try:
                    w.conn.send(("stop",))
                except OSError:
                    pass
                w.kill()

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        self.counters["restarts"] += 1
        new = _Worker()
        self._pool[self._pool.index(w)] = new
        return new

    def _run_job(self, tasks: list[Task]) -> list[Outcome]:
        busy: dict[Connection, _Worker] = {}
        try:
            return self._dispatch(tasks, busy)
        except BaseException:
            for w in list(busy.values()):  # never let a stale reply leak into the next job
                self._replace(w)
            raise

    def _dispatch(self, tasks: list[Task], busy: dict[Connection, _Worker]) -> list[Outcome]:
        results: list[Outcome] = [Outcome(None, "pending")] * len(tasks)
        pending = collections.deque(range(len(tasks)))
        idle = list(self._pool)

        def finish(w: _Worker, value: float | None, status: str, detail: str = "") -> None:
            del busy[w.conn]
            results[w.index] = self._record(tasks[w.index], Outcome(value, status), detail)
            w.index = None

        while pending or busy:
            while pending and idle:
                w, i = idle.pop(), pending.popleft()
                try:
                    w.conn.send(("run", i, tasks[i]))
                except OSError:  # the worker died while idle: replace it and retry the item
                    idle.append(self._replace(w))
                    pending.appendleft(i)
                    continue
                w.index, w.sent, w.started = i, time.monotonic(), 0.0
                w.timeout_s = tasks[i].timeout_s or self.timeout_s
                busy[w.conn] = w
            next_deadline = min(w.deadline(self.setup_timeout_s) for w in busy.values())
            for conn in wait(list(busy), timeout=max(0.0, next_deadline - time.monotonic())):
                w = busy[conn]
                try:
                    msg = conn.recv()
                except (EOFError, OSError):  # the worker died (segfault, OOM kill, os._exit)
                    self.counters["crashes"] += 1
                    if w.ready:
                        finish(w, self.exception_value, "exception", "the worker process died")
                    else:  # it never started: not the item's fault, so retry the item
                        self._start_failures += 1
                        if self._start_failures >= _MAX_START_FAILURES:
                            raise RuntimeError(
                                "reward workers keep dying before they start; see their "
                                "traceback on stderr (is r1jax importable from sys.path?)"
                            ) from None
                        del busy[w.conn]
                        pending.appendleft(w.index)
                    idle.append(self._replace(w))
                    continue
                if msg[0] == "ready":
                    w.ready, self._start_failures = True, 0
                elif msg[0] == "start":
                    w.started = time.monotonic()
                elif msg[0] == "ok":
                    finish(w, msg[2], "ok")
                    idle.append(w)
                else:  # "err": the reward function raised
                    finish(w, self.exception_value, "exception", msg[2])
                    idle.append(w)
            now = time.monotonic()
            for w in [w for w in busy.values() if now >= w.deadline(self.setup_timeout_s)]:
                finish(w, self.timeout_value, "timeout")
                idle.append(self._replace(w))
        return results
