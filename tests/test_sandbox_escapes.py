"""The code sandbox against escape and forgery attempts (table: tests/sandbox_escape_cases.py).

Every attempt scores its expected reward and is contained as seen from outside, with the Python
audit hook off: as the trainer runs here (root) and as an unprivileged trainer (`runuser -u
nobody`, system python3, a world-readable copy of the sandbox files). docs/sandbox_escapes.md is
rendered from the same table (`python tests/test_sandbox_escapes.py` rewrites it).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from r1jax.rewards import code
from r1jax.rewards.sandbox_rpc import decode, encode
from r1jax.rewards.sandbox_seccomp import build_filter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sandbox_escape_cases as cases  # noqa: E402

DOC = os.path.join(HERE, "..", "docs", "sandbox_escapes.md")
SANDBOX_FILES = ("code.py", "_sandbox_child.py", "sandbox_rpc.py", "sandbox_seccomp.py")
SANDBOX_FILES += ("sandbox_landlock.py",)
LINUX = sys.platform.startswith("linux")


def _assert_rows(rows):
    for row in rows:
        assert (row["name"], row["score"], row["contained"]) == (
            row["name"],
            row["expected"],
            True,
        ), row


@pytest.mark.skipif(not LINUX, reason="the sandbox is Linux-only")
def test_escape_attempts_are_contained_and_score_their_expected_reward():
    rows = cases.run_cases(code)
    assert len(rows) == len(cases.CASES)
    _assert_rows(rows)
    if os.geteuid() == 0:  # as root every layer is in place; only the audit hook is off
        assert {m for row in rows for m in row["missing"]} == {"audit_hook"}


# Without namespaces (a kernel that refuses them) the uid, Landlock, seccomp, the subreaper sweep
# and the judge still hold. Writes to world-writable paths outside the work dir (these rows) need
# Landlock or the read-only root of the mount namespace.
NEEDS_LANDLOCK_OR_MOUNTNS = {
    "append to a world-writable trainer file",
    "create a file in a world-writable dir",
    "write through a directory fd",
}


@pytest.mark.skipif(not LINUX, reason="the sandbox is Linux-only")
def test_without_namespaces_the_rest_holds_and_the_gap_is_warned_and_counted(caplog):
    code._warned.clear()
    before = code.COUNTERS["sandbox/missing/pidns"]
    landlock = not code.run_sandboxed("", namespaces=False).missing.get("landlock")
    names = {c[0] for c in cases.CASES} - (set() if landlock else NEEDS_LANDLOCK_OR_MOUNTNS)
    rows = cases.run_cases(code, names=names, namespaces=False)
    assert len(rows) == len(names)
    _assert_rows(rows)
    assert code.COUNTERS["sandbox/missing/pidns"] - before == len(rows) + 1
    assert all({"pidns", "mountns", "readonly_root"} <= set(row["missing"]) for row in rows)
    warned = {r.getMessage() for r in caplog.records if r.levelname == "WARNING"}
    assert "code sandbox: layer 'pidns' is missing (disabled)" in warned
    assert "code sandbox: layer 'readonly_root' is missing (no mount namespace)" in warned


@pytest.mark.skipif(not LINUX, reason="the sandbox is Linux-only")
def test_escape_attempts_as_an_unprivileged_trainer():
    runuser, python = shutil.which("runuser"), "/usr/bin/python3"
    if os.geteuid() != 0 or runuser is None or not os.access(python, os.X_OK):
        pytest.skip("needs root, runuser and /usr/bin/python3 to start the unprivileged trainer")
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="r1jax-sandbox-nobody-", dir="/tmp"))
    try:
        _run_as_nobody(runuser, python, tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _run_as_nobody(runuser, python, tmp_path):
    pkg = tmp_path / "sbx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in SANDBOX_FILES:
        shutil.copy(os.path.join(os.path.dirname(code.__file__), name), pkg / name)
    shutil.copy(os.path.join(HERE, "sandbox_escape_cases.py"), tmp_path)
    for p in [tmp_path, pkg, *tmp_path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    out = subprocess.run(
        [runuser, "-u", "nobody", "--", python, "-I", str(tmp_path / "sandbox_escape_cases.py")]
        + [str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": "/tmp"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout)
    assert len(rows) == len(cases.CASES)
    # Same uid as the trainer: only the read-only root (user + mount namespace, here available)
    # stops a chmod of the trainer's own files; Landlock does not cover chmod.
    chmod_gap = [
        r for r in rows if r["name"] == "fchmod a trainer file" and "mountns" in r["missing"]
    ]
    _assert_rows([r for r in rows if r not in chmod_gap])
    # Not root: no separate uid. That layer is reported missing (and warned about), never silent.
    assert all("uid" in row["missing"] for row in rows)
    assert "layer 'uid' is missing" in out.stderr


def test_seccomp_filter_layout():
    prog = build_filter("x86_64", own_pid=1234)
    assert prog[:3] == [(0x20, 0, 0, 4), (0x15, 1, 0, 0xC000003E), (0x06, 0, 0, 0x80000000)]
    assert prog[-1] == (0x06, 0, 0, 0x7FFF0000)  # default: allow
    for i, (op, jt, jf, _) in enumerate(prog):  # every jump lands inside the program
        if op in (0x15, 0x35, 0x45):
            assert i + 1 + max(jt, jf) < len(prog)
    denied = {k for (op, _, _, k) in prog if op == 0x15}
    assert {101, 133, 259, 424, 434, 272, 62} <= denied  # ptrace, mknod(at), pidfd_*, unshare, kill
    assert (0x15, 1, 0, 1234) in prog  # signals only to our own pid without a pid namespace
    assert (0x15, 1, 0, 1234) not in build_filter("x86_64", own_pid=None)


def test_values_cross_only_as_exact_builtin_types():
    value = [1, 2.5, "s", b"b", (None, True), {3, 4}, frozenset([5]), {"k": [1j]}]
    assert decode(json.loads(json.dumps(encode(value)))) == value

    class Rigged(int):
        def __eq__(self, other):
            return True

    with pytest.raises(TypeError):
        encode(Rigged(0))
    with pytest.raises(TypeError):
        decode(["R", "f"])  # a reference to a program function is only for the program side


def test_the_escape_table_in_docs_is_current():
    with open(DOC) as f:
        assert cases.markdown_table() in f.read(), "run: python tests/test_sandbox_escapes.py"


if __name__ == "__main__":
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w") as f:
        f.write(
            "# Sandbox escape attempts\n\n"
            "Generated from `tests/sandbox_escape_cases.py` by\n"
            "`python tests/test_sandbox_escapes.py`; `tests/test_sandbox_escapes.py` runs every\n"
            "row as root and as an unprivileged trainer (`runuser -u nobody`), with the Python\n"
            "audit hook off so that the kernel layers alone are shown to contain each attempt.\n"
            "A row passes when the program gets the expected score and the outside check holds\n"
            "(victim alive, files untouched, no process left). Without namespaces (a kernel\n"
            "that refuses them: warned and counted as `sandbox/missing/<layer>`) every row still\n"
            "holds through Landlock; without Landlock too, all but the three writes to\n"
            "world-writable paths outside the work dir; for an unprivileged trainer without a\n"
            "mount namespace, also the chmod of the trainer's own files (same uid). The layers\n"
            "are described in "
            "`r1jax/rewards/_sandbox_child.py`.\n\n" + cases.markdown_table()
        )


@pytest.mark.skipif(not LINUX, reason="the sandbox is Linux-only")
def test_nothing_outlives_a_killed_caller():
    # A reward worker SIGKILLed by the pool mid-call: its sandbox (supervisor, init, program and
    # the program's children) goes with it instead of running on to its own deadline.
    marker = f"{700 + os.getpid() % 100}.{os.getpid()}"
    program = (
        "import os\nif os.fork() == 0:\n    os.setsid()\n"
        f"    os.execv('/bin/sleep', ['sleep', '{marker}'])\nimport time\ntime.sleep(60)"
    )
    caller = subprocess.Popen(
        [sys.executable, "-c", "import sys; from r1jax.rewards.code import run_sandboxed;"
         "run_sandboxed(sys.argv[1], timeout_s=60, audit_hook=False)", program],
    )  # fmt: skip
    try:
        for _ in range(600):  # wait until the program's child runs (30 s at most)
            if cases.running(marker):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the sandboxed program never started")
    finally:
        caller.kill()
        caller.wait()
    assert cases._nothing_left({"sleep": marker})
