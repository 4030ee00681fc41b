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

Process mechanics (fresh interpreters, sessions, temp dirs, stale-dir cleanup) are in
r1jax.rewards.workers.

Start-up is paid once per pool: `workers` processes (0 = auto: min(usable CPUs, 8)) start on the
first item, build the reward functions given to `preload` (RewardStack passes its own) before
they report ready, and then serve every later call; only a killed or dead worker is replaced.
The clock of an item starts when its worker can begin it (sent to an idle worker, or the item
before it answered); building a reward function is reported and falls, like start-up and
imports, under the separate, generous `setup_timeout_s`. Every wait of the
dispatcher has a deadline, sends to a worker time out (SO_SNDTIMEO), and `close` abandons an
in-flight job, so no call can block forever. `close` (also on leaving a `with` block, and for
every open pool at interpreter exit) kills the workers and removes their temp dirs.
"""

from __future__ import annotations

import atexit
import collections
import logging
import queue
import threading
import time
import traceback
import weakref
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from multiprocessing.connection import wait
from typing import Any

from r1jax.rewards.registry import get_reward_fn, spec_key
from r1jax.rewards.workers import (
    Item,
    Outcome,
    Task,
    Worker,
    auto_workers,
    evaluate_task,
    remove_stale_dirs,
)

__all__ = ["IN_PROCESS", "Outcome", "RewardPool", "Task", "auto_workers", "default_pool"]
log = logging.getLogger(__name__)
IN_PROCESS = frozenset({"reward_model"})  # rewards that hold a model: run in the caller
_MAX_START_FAILURES = 3
_LOGGED_ERRORS = 5
_POLL_S = 0.2  # longest a waiting dispatcher goes without checking for close()
# Items queued per worker: the next one waits in its socket while it computes one, which hides
# the round trip (cheap rule rewards cost less than the messages). Only the first has a clock.
_DEPTH = 2


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
        self._pool: list[Worker] = []
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
            inner = Future()
            self._queue(([tasks[i] for i in remote], inner))
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
        with self._start_lock:  # after this, _start refuses: no job can arrive unseen
            if self._closed:
                return
            self._closed, thread = True, self._thread
        _OPEN.discard(self)
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

    def _queue(self, job: tuple) -> None:
        """Starts the dispatcher if needed and queues `job`, both under the lock that `close`
        takes, so that a job is never queued behind close's stop signal."""
        with self._start_lock:
            if self._closed:
                raise RuntimeError("RewardPool is closed")
            if self._thread is None:
                # Workers are started by (and die with, via PDEATHSIG) the dispatcher thread.
                self._thread = threading.Thread(target=self._loop, name="reward-pool", daemon=True)
                self._thread.start()
            self._jobs.put(job)

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
            value, notes = evaluate_task(self._fns[key], task)
            return self._record(task, Outcome(value, "ok", notes))
        except Exception:
            outcome = Outcome(self.exception_value, "exception")
            return self._record(task, outcome, traceback.format_exc(limit=8))

    def _spawn(self) -> None:
        with self._start_lock:
            preload = list(self._preload)
        self._pool.append(Worker(preload, self.setup_timeout_s))

    def _replace(self, w: Worker, respawn: bool = True) -> None:
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
                now = time.monotonic()
                if not w.queued:  # it starts now (unless it reports "build")
                    w.started = now
                w.queued.append(Item(i, now, tasks[i].timeout_s or self.timeout_s))

    def _collect(self, tasks: list[Task], results: list, pending: collections.deque) -> None:
        """Waits (bounded) for messages from starting and busy workers; kills overdue ones."""

        def finish(w: Worker, outcome: Outcome, detail: str = "") -> None:
            self._finish(w, outcome, tasks, results, detail)

        def drop(w: Worker, outcome: Outcome, detail: str = "") -> None:
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
            elif msg[0] == "build":  # of queued[0] (a worker answers in order): not its time
                w.started = 0.0
            elif msg[0] == "start":
                w.started = time.monotonic()
            elif msg[0] == "ok":
                finish(w, Outcome(msg[2], "ok", msg[3]))
            else:  # "err": the reward function raised
                finish(w, Outcome(self.exception_value, "exception"), msg[2])
        if self._closed:
            raise RuntimeError("RewardPool was closed while this job ran")
        now = time.monotonic()
        for w in [w for w in waiting.values() if w in self._pool and w.waiting]:
            if now >= w.deadline(self.setup_timeout_s):
                drop(w, Outcome(self.timeout_value, "timeout"))

    def _finish(self, w: Worker, outcome: Outcome, tasks, results, detail: str = "") -> None:
        i = w.queued.popleft().index
        results[i] = self._record(tasks[i], outcome, detail)
        w.started = time.monotonic()  # the next queued item starts now (unless "build")

    def _drop(self, w: Worker, outcome: Outcome, tasks, results, pending, detail="") -> None:
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
