"""Code-execution reward: run the completion's program against test cases in a sandbox.

The program is the last ```python block of the completion, else the content of its last
`<answer>` block (fences stripped). Tests (per-item field `tests`) are stdin/expected-stdout pairs
and/or assert-style test code; each stdin case is one process, the assert code one more process
in which every top-level `assert` (or bare expression such as `check(f)`) counts as one test.
Reward: the fraction of tests passed (`mode="fraction"`) or 1.0 only if all pass (`mode="all"`);
0.0 without a program; None when the tests themselves cannot be read.

Each process runs `_sandbox_child.py` (its docstring lists the layers: namespaces, read-only
root and tmpfs work dir, an unprivileged uid through a world-readable python3, seccomp, no
inherited fds) under a wall-clock deadline. The verdict comes from the trusted side: stdin cases
compare exit status and stdout here; assert tests run in the sandbox's supervisor, outside the
program's process, against stubs of its functions (sandbox_rpc), so writing pass lines, walking
frames or exiting early with status 0 cannot move the count. Every call reports the caps it hit
(time, memory, output) and the layers missing (logged once, counted in COUNTERS).
Accepted `tests` forms:
  {"inputs": [...], "outputs": [...]}               (APPS)
  {"test_cases": [{"input": .., "output": ..}, ..]}  (open-r1 verification_info)
  [{"input": .., "output": ..}, ..], [(input, output), ..] or one {"input": .., "output": ..}
  "assert f(1) == 2\\n..."                           (MBPP / HumanEval style)
  {"asserts": "...", ...} together with any stdin form; a JSON string of any of these.
APPS call-based problems (`fn_name`) are not supported: they score None. Assert tests see
only plain values returned by the program (sandbox_rpc lists the limits of that protocol).
"""

from __future__ import annotations

import ast
import collections
import functools
import json
import logging
import marshal
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_child.py")
_PY_BLOCK_RE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_ANY_BLOCK_RE = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
NOBODY = 65534
STARTUP_GRACE_S = 0.5  # wall-clock allowance for interpreter start-up, on top of timeout_s
REPORT_GRACE_S = 0.5  # for the supervisor to report after its deadline
EXIT_MEMORY = 57  # _sandbox_child.EXIT_MEMORY
log = logging.getLogger(__name__)


def extract_program(completion: str) -> str | None:
    """Last ```python block, else the last `<answer>` block (inner fence stripped), else None."""
    blocks = _PY_BLOCK_RE.findall(completion)
    if blocks:
        return blocks[-1]
    answers = _ANSWER_RE.findall(completion)
    if answers:
        inner = _ANY_BLOCK_RE.findall(answers[-1])
        program = inner[-1] if inner else answers[-1]
        return program if program.strip() else None
    return None


@dataclass(frozen=True)
class CodeTests:
    cases: tuple[tuple[str, str], ...] = ()  # (stdin, expected stdout)
    asserts: str | None = None
    n_asserts: int = 0

    @property
    def total(self) -> int:
        return len(self.cases) + self.n_asserts


def _count_tests(code: str) -> int:
    stmts = ast.parse(code).body  # SyntaxError -> tests unreadable
    return max(1, sum(isinstance(s, (ast.Assert, ast.Expr)) for s in stmts))


def parse_tests(tests) -> CodeTests | None:
    """Normalise the accepted `tests` forms (module docstring); None if unreadable or empty."""
    try:
        if isinstance(tests, str) and tests.lstrip()[:1] in ("{", "["):
            tests = json.loads(tests)
        if isinstance(tests, str):
            return CodeTests(asserts=tests, n_asserts=_count_tests(tests))
        asserts = None
        if isinstance(tests, dict) and tests.get("fn_name"):
            return None  # APPS call-based: not supported, so not judged (rather than failed)
        if isinstance(tests, dict) and "input" in tests:
            tests = [tests]  # a single case
        if isinstance(tests, dict):
            asserts = tests.get("asserts") or tests.get("test_code")
            if "inputs" in tests:
                pairs = list(zip(tests["inputs"], tests["outputs"], strict=True))
            else:
                pairs = tests.get("test_cases", [])
        else:
            pairs = list(tests)
        cases = tuple(
            (str(p["input"]), str(p["output"])) if isinstance(p, dict) else (str(p[0]), str(p[1]))
            for p in pairs
        )
        spec = CodeTests(cases, asserts, _count_tests(asserts) if asserts else 0)
    except (ValueError, TypeError, KeyError, IndexError, SyntaxError):
        return None
    return spec if spec.total else None


def _normalise_output(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


LAYERS = ("uid", "pidns", "mountns", "readonly_root", "proc", "work_tmpfs", "netns", "ipcns")
LAYERS += ("landlock", "seccomp", "audit_hook")
COUNTERS: collections.Counter = collections.Counter()  # this process's sandbox metrics
# What CodeReward.counters reports (a fixed set, so every step and process logs the same keys).
NOTE_KEYS = ("sandbox/calls", "sandbox/layers_missing")
NOTE_KEYS += ("sandbox/time_cap", "sandbox/memory_cap", "sandbox/output_cap")
_warned: set = set()


@dataclass(frozen=True)
class RunResult:
    returncode: int | None  # None when killed for exceeding the wall clock
    stdout: str
    passed_asserts: int = 0  # counted by the judge, outside the sandbox
    isolation: dict | None = None  # {layer: 1 in effect / 0 missing}; None: no report came back
    missing: dict = field(default_factory=dict)  # {layer: why it is missing}
    caps_hit: tuple = ()  # of "time", "memory", "output"
    wall_s: float = 0.0
    cpu_s: float = 0.0
    max_rss_mb: float = 0.0

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def _readable_by_others(path: str, directory: bool = False) -> bool:
    """Can an unprivileged uid read `path` (and traverse every ancestor)?"""
    path = os.path.realpath(path)
    need = stat.S_IROTH | (stat.S_IXOTH if directory else 0)
    try:
        if os.stat(path).st_mode & need != need:
            return False
        while path != os.path.dirname(path):
            path = os.path.dirname(path)
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


@functools.cache
def _usable_unprivileged(python: str) -> bool:
    """Does `python` run with its standard library readable by an unprivileged uid?"""
    if not _readable_by_others(python):
        return False
    probe = "import os, sys; print(sys.version_info >= (3, 8)); print(os.path.dirname(os.__file__))"
    try:
        out = subprocess.run(
            [python, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=30
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return False
    return out[0] == "True" and _readable_by_others(out[1], directory=True)


def resolve_python(python: str | None = None, drop_privileges: bool = True) -> str:
    """The interpreter for the sandbox. As root (dropping to uid 65534) it must be one that uid
    can run with its standard library, e.g. the system python3, never a skipped drop."""
    candidates = (
        [python] if python else [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]
    )
    if os.geteuid() != 0 or not drop_privileges:
        return candidates[0]
    for c in candidates:
        if c and _usable_unprivileged(c):
            return c
    raise ValueError(
        f"code reward: python={python or sys.executable!r} cannot run as uid {NOBODY} (it or its"
        " standard library is not world-readable); set `python` to a world-readable python3"
        " (3.8+), e.g. /usr/bin/python3"
    )


def _note(missing: dict, caps_hit: tuple) -> None:
    COUNTERS["sandbox/calls"] += 1
    for cap in caps_hit:
        COUNTERS[f"sandbox/{cap}_cap"] += 1
    if missing:
        COUNTERS["sandbox/layers_missing"] += 1
    for layer, why in missing.items():
        COUNTERS[f"sandbox/missing/{layer}"] += 1
        if (layer, why) not in _warned:
            _warned.add((layer, why))
            log.warning("code sandbox: layer %r is missing (%s)", layer, why)


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def run_sandboxed(
    program: str,
    *,
    stdin: str = "",
    test_code: str | None = None,
    timeout_s: float = 2.0,
    memory_mb: int = 1024,
    max_output_bytes: int = 1 << 20,
    nproc: int = 64,
    drop_privileges: bool = True,
    isolate_network: bool = True,
    python: str | None = None,
    namespaces: bool = True,
    seccomp: bool = True,
    audit_hook: bool = True,
    work_mb: int = 16,
) -> RunResult:
    """Run `program` once in the sandbox (`_sandbox_child.py` describes the layers): on `stdin`,
    or serving calls from `test_code`'s asserts, which the judge counts outside the sandbox.

    `timeout_s` is the CPU limit; the wall-clock limit adds STARTUP_GRACE_S for start-up.
    `namespaces`, `seccomp`, `audit_hook`: layers to leave out (tests; each is warned about)."""
    python = resolve_python(python, drop_privileges)
    t0 = time.monotonic()
    wall_s = timeout_s + STARTUP_GRACE_S
    root = tempfile.mkdtemp(prefix="r1jax-sandbox-")
    fds: list[int] = []
    try:
        work = os.path.join(root, "work")
        os.mkdir(work, 0o700)
        if drop_privileges and os.geteuid() == 0:
            os.chmod(root, 0o711)  # `nobody` may traverse to work/ by absolute path, not list
            os.chown(work, NOBODY, NOBODY)
        report_r, report_w = os.pipe()
        tests_fd = _memfd("r1jax-tests", test_code.encode()) if test_code is not None else -1
        fds += [report_r, report_w] + ([tests_fd] if tests_fd >= 0 else [])
        cfg = dict(
            program=program,
            mode="assert" if test_code is not None else "stdin",
            workdir=work,
            report_fd=report_w,
            tests_fd=tests_fd,
            deadline=t0 + wall_s,
            cpu_s=timeout_s,
            memory_bytes=int(memory_mb) << 20,
            fsize_bytes=int(max_output_bytes),
            max_msg_bytes=int(max_output_bytes),
            work_bytes=int(work_mb) << 20,
            nofile=64,
            nproc=nproc,
            uid=NOBODY,
            gid=NOBODY,
            ppid=os.getpid(),
            drop_privileges=drop_privileges,
            isolate_network=isolate_network,
            namespaces=namespaces,
            seccomp=seccomp,
            audit_hook=audit_hook,
        )
        cfg_fd = _memfd("r1jax-sandbox", marshal.dumps(cfg))  # data only, read by our child
        fds.append(cfg_fd)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": work}
        env.update(TMPDIR=work, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        with tempfile.TemporaryFile(dir=root) as fin, tempfile.TemporaryFile(dir=root) as fout:
            fin.write(stdin.encode())
            fin.seek(0)
            proc = subprocess.Popen(
                [python, "-I", "-B", "-S", _CHILD, str(cfg_fd)],
                stdin=fin,
                stdout=fout,
                stderr=subprocess.DEVNULL,
                cwd=root,
                env=env,
                pass_fds=(cfg_fd, report_w) + ((tests_fd,) if tests_fd >= 0 else ()),
                start_new_session=True,  # own process group: killpg takes the init too
            )
            for fd in fds[1:]:
                os.close(fd)  # the child holds its copies; a read of report_r then ends at EOF
            fds = fds[:1]
            try:
                proc.wait(timeout=wall_s + REPORT_GRACE_S)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
            wall = time.monotonic() - t0
            os.set_blocking(report_r, False)
            try:  # written by the supervisor, which no sandboxed process can reach
                report = marshal.loads(os.read(report_r, 1 << 20))
            except (BlockingIOError, EOFError, ValueError, TypeError):
                report = None
            size = fout.tell()
            fout.seek(0)
            stdout = fout.read(max_output_bytes).decode("utf-8", errors="replace")
        return _result(report, timed_out, stdout, size, wall, cfg)
    finally:
        for fd in fds:
            os.close(fd)
        shutil.rmtree(root, ignore_errors=True)


def _result(report, timed_out, stdout, size, wall, cfg) -> RunResult:
    if report is None:  # the supervisor died (killed at the wall clock, or a broken interpreter)
        missing, caps = {"report": "no report from the sandbox"}, ("time",) if timed_out else ()
        _note(missing, caps)
        return RunResult(
            None if timed_out else -1, stdout, missing=missing, caps_hit=caps, wall_s=wall
        )
    code, cpu_s, rss_mb = report["exit"], report["cpu_s"], report["maxrss_kb"] / 1024
    caps = []
    timed_out = timed_out or report["deadline_hit"]
    if timed_out or cpu_s >= cfg["cpu_s"] or code in (128 + signal.SIGXCPU, -signal.SIGXCPU):
        caps.append("time")
    mem = cfg["memory_bytes"] / 2**20
    if code == EXIT_MEMORY or report.get("memory_errors") or rss_mb >= 0.9 * mem:
        caps.append("memory")
    if size >= cfg["fsize_bytes"]:
        caps.append("output")
    missing = report["missing"]
    _note(missing, tuple(caps))
    isolation = {layer: int(layer not in missing) for layer in LAYERS}
    return RunResult(
        None if timed_out else code,
        stdout,
        report.get("passed", 0),
        isolation,
        missing,
        tuple(caps),
        wall,
        cpu_s,
        rss_mb,
    )


class CodeReward:
    """Reward function over the per-item field `tests` (see module docstring).

    `timeout_s` bounds each process (one stdin case, or the whole assert code); `total_timeout_s`
    bounds one item (remaining tests fail once it is spent). Keep the pool's per-item timeout
    above `total_timeout_s` + 1 s so that the sandbox, not the pool, handles slow programs.
    """

    def __init__(
        self,
        *,
        mode: str = "fraction",
        timeout_s: float = 2.0,
        total_timeout_s: float = 8.0,
        memory_mb: int = 1024,
        max_output_bytes: int = 1 << 20,
        drop_privileges: bool = True,
        isolate_network: bool = True,
        python: str | None = None,
        work_mb: int = 16,
    ):
        if mode not in ("fraction", "all"):
            raise ValueError(f"code reward: mode must be 'fraction' or 'all', got {mode!r}")
        if min(timeout_s, total_timeout_s, memory_mb, max_output_bytes, work_mb) <= 0:
            raise ValueError("code reward: timeouts and limits must be positive")
        self.mode, self.total_timeout_s = mode, total_timeout_s
        self.limits = dict(
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            max_output_bytes=max_output_bytes,
            drop_privileges=drop_privileges,
            isolate_network=isolate_network,
            python=resolve_python(python, drop_privileges),  # fails here, naming `python`
            work_mb=work_mb,
        )

    def score(self, completion: str, tests) -> float | None:
        spec = parse_tests(tests)
        if spec is None:
            return None
        program = extract_program(completion)
        if program is None:
            return 0.0
        deadline = time.monotonic() + self.total_timeout_s
        passed = 0

        def budget() -> float:
            return min(self.limits["timeout_s"], deadline - time.monotonic())

        for stdin, expected in spec.cases:
            if budget() <= 0:
                break
            res = run_sandboxed(program, stdin=stdin, **{**self.limits, "timeout_s": budget()})
            ok = res.returncode == 0 and _normalise_output(res.stdout) == _normalise_output(
                expected
            )
            passed += ok
            if not ok and self.mode == "all":
                return 0.0
        if spec.asserts is not None and budget() > 0:
            limits = {**self.limits, "timeout_s": budget()}
            res = run_sandboxed(program, test_code=spec.asserts, **limits)
            passed += min(res.passed_asserts, spec.n_asserts)
        if self.mode == "all":
            return float(passed == spec.total)
        return passed / spec.total

    @property
    def counters(self) -> dict[str, int]:
        """Running totals of sandbox events in this process; the reward pool sends each item's
        increments back with its value, and they are logged as rewards/count/<label>/sandbox/*."""
        return {k: COUNTERS[k] for k in NOTE_KEYS}

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float | None]:
        if "tests" not in fields:
            raise ValueError("code reward needs the per-item field 'tests'")
        return [self.score(c, t) for c, t in zip(completions, fields["tests"])]
