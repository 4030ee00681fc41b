"""Code-execution reward: run the completion's program against test cases in a sandbox.

The program is the last ```python block of the completion, else the content of its last
`<answer>` block (fences stripped). Tests (per-item field `tests`) are stdin/expected-stdout pairs
and/or assert-style test code; each stdin case is one process, the assert code one more process
in which every top-level `assert` (or bare expression such as `check(f)`) counts as one test.
Reward: the fraction of tests passed (`mode="fraction"`) or 1.0 only if all pass (`mode="all"`);
0.0 without a program; None when the tests themselves cannot be read.

Each process runs `_sandbox_child.py` (see its docstring for the confinement layers) in a fresh
temporary directory that is deleted afterwards, in a new session, with stdin/stdout/stderr on
files; on wall-clock timeout the whole process group is SIGKILLed. stdout is capped by
RLIMIT_FSIZE. Accepted `tests` forms:
  {"inputs": [...], "outputs": [...]}               (APPS)
  {"test_cases": [{"input": .., "output": ..}, ..]}  (open-r1 verification_info)
  [{"input": .., "output": ..}, ..], [(input, output), ..] or one {"input": .., "output": ..}
  "assert f(1) == 2\\n..."                           (MBPP / HumanEval style)
  {"asserts": "...", ...} together with any stdin form; a JSON string of any of these.
APPS call-based problems (`fn_name`) are not supported: they score None.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_child.py")
_PY_BLOCK_RE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_ANY_BLOCK_RE = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
NOBODY = 65534
STARTUP_GRACE_S = 0.5  # wall-clock allowance for interpreter start-up, on top of timeout_s


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


@dataclass(frozen=True)
class RunResult:
    returncode: int | None  # None when killed for exceeding the wall clock
    stdout: str
    passed_asserts: int = 0
    isolation: dict | None = None  # optional layers in effect: {"netns": 0/1, "nobody": 0/1}

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


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
) -> RunResult:
    """Run `program` once in the sandbox (then `test_code`'s asserts, if given).

    `timeout_s` is the CPU limit; the wall-clock limit adds STARTUP_GRACE_S for start-up."""
    root = tempfile.mkdtemp(prefix="r1jax-sandbox-")
    try:
        work, io_dir = os.path.join(root, "work"), os.path.join(root, "io")
        os.mkdir(work, 0o700)
        os.mkdir(io_dir, 0o700)  # closed to `nobody`: the program cannot fake its own results
        if drop_privileges and os.geteuid() == 0:
            os.chmod(root, 0o711)  # `nobody` may traverse to work/ by absolute path, not list
            os.chown(work, NOBODY, NOBODY)
        paths = {k: os.path.join(io_dir, k) for k in ("config", "stdin", "stdout", "result")}
        with open(paths["stdin"], "w", encoding="utf-8") as f:
            f.write(stdin)
        with (
            open(paths["stdin"], "rb") as fin,
            open(paths["stdout"], "wb") as fout,
            open(paths["result"], "wb") as fres,
        ):
            cfg = dict(
                program=program,
                mode="assert" if test_code is not None else "stdin",
                test_code=test_code,
                workdir=work,
                result_fd=fres.fileno(),
                cpu_s=timeout_s,
                memory_bytes=int(memory_mb) << 20,
                fsize_bytes=int(max_output_bytes),
                nofile=64,
                nproc=nproc,
                drop_privileges=drop_privileges,
                isolate_network=isolate_network,
                ppid=os.getpid(),
            )
            with open(paths["config"], "w", encoding="utf-8") as f:
                json.dump(cfg, f)
            env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": work}
            env.update(TMPDIR=work, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
            proc = subprocess.Popen(
                [python or sys.executable, "-I", "-B", _CHILD, paths["config"]],
                stdin=fin,
                stdout=fout,
                stderr=subprocess.DEVNULL,
                cwd=work,
                env=env,
                pass_fds=(fres.fileno(),),
                start_new_session=True,  # own process group: killpg takes its children too
            )
            try:
                returncode = proc.wait(timeout=timeout_s + STARTUP_GRACE_S)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        with open(paths["stdout"], "rb") as f:
            stdout = f.read(max_output_bytes).decode("utf-8", errors="replace")
        with open(paths["result"], "rb") as f:
            lines = f.read(1 << 16).split(b"\n")
        try:
            isolation = json.loads(lines[0])
        except ValueError:
            isolation = None  # the child died before confining itself
        return RunResult(returncode, stdout, lines[1:].count(b"1"), isolation)
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
    ):
        if mode not in ("fraction", "all"):
            raise ValueError(f"code reward: mode must be 'fraction' or 'all', got {mode!r}")
        if timeout_s <= 0 or total_timeout_s <= 0 or memory_mb <= 0 or max_output_bytes <= 0:
            raise ValueError("code reward: timeouts and limits must be positive")
        self.mode, self.total_timeout_s = mode, total_timeout_s
        self.limits = dict(
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            max_output_bytes=max_output_bytes,
            drop_privileges=drop_privileges,
            isolate_network=isolate_network,
            python=python,
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

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float | None]:
        if "tests" not in fields:
            raise ValueError("code reward needs the per-item field 'tests'")
        return [self.score(c, t) for c, t in zip(completions, fields["tests"])]
