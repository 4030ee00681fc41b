"""Worker-process pool for reward functions, with a hard per-item timeout.

Rule rewards (every reward not named in `in_process`) always run in worker processes: a
pathological answer can hang sympy inside C code (a power tower it tries to expand), where no
signal or thread can interrupt it, so the only timeout that always works is killing a process.
Model-based rewards (IN_PROCESS: "reward_model") run in the calling process: they hold a model on
the accelerator that every worker would otherwise load again, and their cost is bounded by the
model; their exceptions are caught and counted, but no timeout applies to them.

Why not ProcessPoolExecutor: it cannot kill one hung task. Here every item is dispatched on its
own; a worker that overruns is SIGKILLed with its process group and replaced, the item gets
`timeout_value`, a counter goes up and the run goes on. A worker that dies mid-item (segfault,
OOM kill, `os._exit`) is replaced likewise and the item gets `exception_value` (status "crash");
an exception raised by the reward function gets `exception_value` too (status "exception"). Both
values default to 0.0 and may be None (the item is then excluded from the advantage like any
other None).

Workers are fresh interpreters (`python -c ...`, fork+exec, like multiprocessing's 'spawn'): the
parent holds JAX threads, so it is never forked without exec. We exec ourselves rather than use
multiprocessing's spawn context because spawn re-imports the trainer's `__main__` (and with it
JAX) in every worker and every replacement. Each worker gets its own session (so killpg reaches
anything it started), dies with the pool's dispatcher thread (PR_SET_PDEATHSIG), and rebuilds
reward functions from specs (registry name + kwargs), never from pickled closures.

Start-up is paid once per pool: `workers` processes (0 = auto: min(usable CPUs, 8)) start on the
first item, build the reward functions given to `preload` (RewardStack passes its own) before
they report ready, and then serve every later call; only a killed or dead worker is replaced.
The clock of an item starts when its worker reports that it began calling the function, so
start-up and imports fall under the separate, generous `setup_timeout_s`. Every wait of the
dispatcher has a deadline, sends to a worker time out (SO_SNDTIMEO), and `close` abandons an
in-flight job, so no call can block forever.

Each worker's TMPDIR is r1jax-reward-worker-<owner pid>-<owner start time>-*, removed when the
worker is killed. When a pool starts, such dirs whose owner process is gone (a SIGKILLed trainer)
are removed; those of live processes (a concurrent run) are kept. `close` (also on leaving a
`with` block, and for every open pool at interpreter exit) kills the workers and removes their
dirs.
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import json
import logging
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Iterable, Mapping, Sequence
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
IN_PROCESS = frozenset({"reward_model"})  # rewards that hold a model: run in the caller
AUTO_MAX_WORKERS = 8
DIR_PREFIX = "r1jax-reward-worker-"
_MAX_START_FAILURES = 3
_LOGGED_ERRORS = 5
_POLL_S = 0.2  # longest a waiting dispatcher goes without checking for close()
# Items queued per worker: the next one waits in its socket while it computes one, which hides
# the round trip (cheap rule rewards cost less than the messages). Only the first has a clock.
_DEPTH = 2


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


def evaluate_task(fn, task: Task) -> float | None:
    """Call a reward function on one item and check that it returned one float or None."""
    fields = {k: [v] for k, v in task.fields.items()}
    out = fn([task.prompt], [task.completion], **fields)
    if len(out) != 1:
        raise ValueError(f"reward {task.name!r} returned {len(out)} values for 1 item")
    return None if out[0] is None else float(out[0])


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


def _worker_main(fd: int) -> None:
    """Worker loop: receive ("preload", specs), build them, reply "ready"; then receive
    ("run", index, Task), reply "start", then "ok" or "err"."""
    _set_pdeathsig()
    conn = Connection(fd)
    fns: dict[str, Any] = {}

    def build(name: str, kwargs: Mapping[str, Any]):
        key = spec_key(name, kwargs)
        if key not in fns:
            fns[key] = get_reward_fn(name, **kwargs)
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
                fn = build(task.name, task.kwargs)
                conn.send(("start", index))
                conn.send(("ok", index, evaluate_task(fn, task)))
            except Exception:
                conn.send(("err", index, traceback.format_exc(limit=8)))
    except (EOFError, OSError):
        return  # the pool is gone


class _Item(NamedTuple):
    index: int
    sent: float
    timeout_s: float


class _Worker:
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
        self.queued: collections.deque[_Item] = collections.deque()  # sent, not answered
        self.started = 0.0  # when the first queued item's call began (0: not yet)

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


_OPEN: weakref.WeakSet = weakref.WeakSet()  # pools to close at interpreter exit


@atexit.register
def _close_open_pools() -> None:
    for pool in list(_OPEN):
        pool.close(timeout_s=5.0)


class RewardPool:
    """Runs `Task`s: `run` blocks, `submit` returns a Future. Tasks named in `in_process` run in
    the calling thread at submit time; all others in `workers` processes (0 = auto_workers())."""

    def __init__(
        self,
        workers: int = 0,
        *,
        timeout_s: float = 10.0,
        timeout_value: float | None = 0.0,
        exception_value: float | None = 0.0,
        setup_timeout_s: float = 120.0,
        in_process: Iterable[str] = IN_PROCESS,
    ):
        if workers < 0 or timeout_s <= 0 or setup_timeout_s <= 0:
            raise ValueError(
                f"RewardPool: need workers >= 0 (0 = auto) and positive timeouts, got "
                f"workers={workers}, timeout_s={timeout_s}, setup_timeout_s={setup_timeout_s}"
            )
        self.workers = workers or auto_workers()
        self.timeout_s, self.setup_timeout_s = timeout_s, setup_timeout_s
        self.timeout_value, self.exception_value = timeout_value, exception_value
        self.in_process = frozenset(in_process)
        self.counters = collections.Counter(
            items=0, timeouts=0, exceptions=0, crashes=0, none_values=0, restarts=0
        )
        self._counters_lock = threading.Lock()  # the caller's thread records in-process items
        self._fns: dict[str, Any] = {}  # in-process reward functions
        self._preload: list[tuple[str, dict]] = []
        self._jobs: queue.Queue = queue.Queue()
        self._pool: list[_Worker] = []
        self._start_lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        _OPEN.add(self)

    # ----------------------------------------------------------------------------- public API

    def preload(self, specs: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Workers started from now on build these (name, kwargs) reward functions before they
        report ready, so that imports (sympy) are not paid inside the first items' timeouts."""
        with self._start_lock:
            for name, kwargs in specs:
                spec = (name, dict(kwargs))
                if name not in self.in_process and spec not in self._preload:
                    self._preload.append(spec)

    def submit(self, tasks: Sequence[Task]) -> Future:
        """Schedule `tasks`; the Future resolves to a list of `Outcome`, in order."""
        if self._closed:
            raise RuntimeError("RewardPool is closed")
        tasks = list(tasks)
        remote = [i for i, t in enumerate(tasks) if t.name not in self.in_process]
        inner: Future | None = None
        if remote:  # dispatched first, so that the workers run while in-process rewards do
            self._start()
            inner = Future()
            self._jobs.put(([tasks[i] for i in remote], inner))
        local = {i: self._run_inline(t) for i, t in enumerate(tasks) if t.name in self.in_process}
        fut: Future = Future()
        fut.set_running_or_notify_cancel()
        if inner is None:
            fut.set_result([local[i] for i in range(len(tasks))])
            return fut

        def done(f: Future) -> None:
            try:
                got = dict(zip(remote, f.result()))
                fut.set_result([local[i] if i in local else got[i] for i in range(len(tasks))])
            except BaseException as e:  # the caller gets it from the Future
                fut.set_exception(e)

        inner.add_done_callback(done)
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

    def close(self, timeout_s: float = 30.0) -> None:
        """Kills the workers (an in-flight job is abandoned: its Future gets an error) and
        removes their temp dirs; waits about `timeout_s` at most for the dispatcher."""
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        with self._start_lock:
            thread = self._thread
        if thread is None:
            return
        self._jobs.put(None)
        thread.join(timeout_s)
        if thread.is_alive():  # never expected: kill from here rather than leave processes
            log.warning("reward pool dispatcher did not stop in %.0f s; killing workers", timeout_s)
            for w in list(self._pool):
                w.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------------------ internals

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                # Workers are started by (and die with, via PDEATHSIG) the dispatcher thread.
                self._thread = threading.Thread(target=self._loop, name="reward-pool", daemon=True)
                self._thread.start()

    def _record(self, task: Task, outcome: Outcome, detail: str = "") -> Outcome:
        with self._counters_lock:
            self.counters["items"] += 1
            status = {"timeout": "timeouts", "exception": "exceptions", "crash": "crashes"}
            if outcome.status in status:
                self.counters[status[outcome.status]] += 1
            if outcome.value is None:
                self.counters["none_values"] += 1
            faults = self.counters["exceptions"] + self.counters["crashes"]
        if outcome.status in ("exception", "crash") and faults <= _LOGGED_ERRORS:
            log.warning("reward %r failed (item gets %r):\n%s", task.name, outcome.value, detail)
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

    def _spawn(self) -> None:
        with self._start_lock:
            preload = list(self._preload)
        self._pool.append(_Worker(preload, self.setup_timeout_s))

    def _replace(self, w: _Worker, respawn: bool = True) -> None:
        w.kill()
        self._pool.remove(w)
        self.counters["restarts"] += 1
        if respawn and not self._closed:
            self._spawn()

    def _loop(self) -> None:
        self._start_failures = 0
        try:
            remove_stale_dirs()
            while (job := self._jobs.get()) is not None:
                tasks, fut = job
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    if self._closed:
                        raise RuntimeError("RewardPool was closed before this job ran")
                    while len(self._pool) < self.workers:
                        self._spawn()
                    fut.set_result(self._run_job(tasks))
                except BaseException as e:  # e.g. cannot exec the interpreter: the caller gets it
                    fut.set_exception(e)
        finally:
            for w in self._pool:
                w.kill()
            self._pool.clear()

    def _run_job(self, tasks: list[Task]) -> list[Outcome]:
        results: list[Outcome] = [Outcome(None, "pending")] * len(tasks)
        pending = collections.deque(range(len(tasks)))
        try:
            while pending or any(w.queued for w in self._pool):
                self._send(tasks, results, pending)
                self._collect(tasks, results, pending)
        except BaseException:
            for w in [w for w in self._pool if w.queued]:
                self._replace(w, respawn=False)  # never let a stale reply reach the next job
            raise
        return results

    def _send(self, tasks: list[Task], results: list, pending: collections.deque) -> None:
        for depth in range(1, _DEPTH + 1):  # one item to every worker before a second to any
            for w in [w for w in self._pool if w.ready and len(w.queued) < depth]:
                if not pending:
                    return
                i = pending.popleft()
                try:
                    w.conn.send(("run", i, tasks[i]))
                except OSError:  # it died (or stopped reading for send_timeout_s)
                    pending.appendleft(i)
                    self._drop(w, Outcome(self.exception_value, "crash"), tasks, results, pending)
                    continue
                w.queued.append(_Item(i, time.monotonic(), tasks[i].timeout_s or self.timeout_s))

    def _collect(self, tasks: list[Task], results: list, pending: collections.deque) -> None:
        """Waits (bounded) for messages from starting and busy workers; kills overdue ones."""

        def finish(w: _Worker, outcome: Outcome, detail: str = "") -> None:
            self._finish(w, outcome, tasks, results, detail)

        def drop(w: _Worker, outcome: Outcome, detail: str = "") -> None:
            self._drop(w, outcome, tasks, results, pending, detail)

        waiting = {w.conn: w for w in self._pool if w.waiting}
        if not waiting:
            return
        next_deadline = min(w.deadline(self.setup_timeout_s) for w in waiting.values())
        timeout = min(_POLL_S, max(0.0, next_deadline - time.monotonic()))
        for conn in wait(list(waiting), timeout=timeout):
            w = waiting[conn]
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # the worker died (segfault, OOM kill, os._exit)
                drop(w, Outcome(self.exception_value, "crash"), "the worker process died")
                continue
            if msg[0] == "ready":
                w.ready, self._start_failures = True, 0
            elif msg[0] == "start":
                w.started = time.monotonic()  # of queued[0]: a worker answers in order
            elif msg[0] == "ok":
                finish(w, Outcome(msg[2], "ok"))
            else:  # "err": the reward function raised
                finish(w, Outcome(self.exception_value, "exception"), msg[2])
        if self._closed:
            raise RuntimeError("RewardPool was closed while this job ran")
        now = time.monotonic()
        for w in [w for w in waiting.values() if w in self._pool and w.waiting]:
            if now >= w.deadline(self.setup_timeout_s):
                drop(w, Outcome(self.timeout_value, "timeout"))

    def _finish(self, w: _Worker, outcome: Outcome, tasks, results, detail: str = "") -> None:
        i = w.queued.popleft().index
        results[i] = self._record(tasks[i], outcome, detail)
        w.started = 0.0

    def _drop(self, w: _Worker, outcome: Outcome, tasks, results, pending, detail="") -> None:
        """Kills `w`: its first item gets `outcome`, the others never started and go back to
        `pending`; a worker that had not reported ready counts as a start failure."""
        if w.queued:
            self._finish(w, outcome, tasks, results, detail)
            pending.extendleft(reversed([q.index for q in w.queued]))
        self._replace(w)
        if not w.ready:
            self._start_failed()

    def _start_failed(self) -> None:
        self.counters["start_failures"] += 1
        self._start_failures += 1
        if self._start_failures >= _MAX_START_FAILURES:
            raise RuntimeError(
                "reward workers keep dying or hanging before they start; see their traceback on "
                "stderr (is r1jax importable from sys.path? does a preloaded reward hang?)"
            )


_default_pool: RewardPool | None = None
_default_lock = threading.Lock()


def default_pool() -> RewardPool:
    """The process's shared pool (auto workers, default timeouts) for stacks built without one,
    so that they do not each start workers."""
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool._closed:
            _default_pool = RewardPool()
        return _default_pool
