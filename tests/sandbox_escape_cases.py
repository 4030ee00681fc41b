"""Escape and forgery attempts against the code sandbox: one table, three users.

tests/test_sandbox_escapes.py runs every case in-process (as root here) and as `nobody` through
this file's __main__ (standard library only: it runs under the system python3 on a copy of the
sandbox files), and docs/sandbox_escapes.md is rendered from the table. Each program tries its
attack and prints the expected output (or answers the assert tests) only if the attack worked;
`check` looks from outside (victim alive, file untouched, no process left). The Python audit
hook is turned off, so what is shown is that the kernel layers alone contain each attempt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

STDIN_OK = [{"input": "", "output": "ok"}]
ASSERTS = "assert f(1) == 2\nassert f(2) == 4\nassert f(5) == 10"


def _untouched(ctx):
    path = os.path.join(ctx["target"], "shared.txt")
    return open(path).read() == "trainer data\n" and not _created(ctx)


def _created(ctx):
    return any(ctx["marker"] in name for name in os.listdir(ctx["target"]))


def _mode_kept(ctx):
    return os.stat(os.path.join(ctx["target"], "private.txt")).st_mode & 0o777 == 0o644


def _victim_alive(ctx):
    if ctx["victim"].poll() is not None:
        return False
    with open(f"/proc/{ctx['victim'].pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] in "SR"  # not stopped by a tracer


def _nothing_left(ctx):
    """No process carrying the case's marker argument, polled while the namespace is torn down."""
    for _ in range(20):
        if not running(ctx["sleep"]):
            return True
        time.sleep(0.1)
    return False


def running(argv1: str) -> bool:
    """Is there a process whose first argument is `argv1`?"""
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[1:2] == [argv1.encode()]:
                    return True
        except (OSError, ValueError):
            continue
    return False


def _always(ctx):
    return True


# (name, what the program tries, what contains it, tests, expected score, check, program)
CASES = [
    ("runs as root", "check os.getuid() / os.geteuid() for 0",
     "uid/gid 65534 via a world-readable python3 (non-root trainer: own uid, no capabilities)",
     STDIN_OK, 0.0, _always,
     "import os\nif 0 in (os.getuid(), os.geteuid(), os.getgid()):\n    print('ok')"),
    ("write under /root", "create a file in /root",
     "unprivileged uid; read-only root (mount namespace)", STDIN_OK, 0.0, _always,
     "open('/root/r1jax-escape-{marker}', 'w').write('x')\nprint('ok')"),
    ("append to a world-writable trainer file", "open a 0666 file outside the work dir",
     "read-only root (mount namespace); Landlock", STDIN_OK, 0.0, _untouched,
     "open('{target}/shared.txt', 'a').write('forged')\nprint('ok')"),
    ("create a file in a world-writable dir", "create a file in a 0777 dir (like /tmp)",
     "read-only root (mount namespace); Landlock", STDIN_OK, 0.0, _untouched,
     "open('{target}/new-{marker}', 'w').write('x')\nprint('ok')"),
    ("write through a directory fd", "openat(dir_fd, O_CREAT) on a 0777 dir outside",
     "read-only root (mount namespace); Landlock (checked at open, dir fds included)", STDIN_OK,
     0.0, _untouched,
     "import os\nd = os.open('{target}', os.O_RDONLY | os.O_DIRECTORY)\n"
     "fd = os.open('dirfd-{marker}', os.O_WRONLY | os.O_CREAT, 0o666, dir_fd=d)\n"
     "os.write(fd, b'x')\nprint('ok')"),
    ("read the trainer's data", "read a world-readable file outside (e.g. the test set)",
     "Landlock: reads only in the work dir and the system/interpreter dirs", STDIN_OK, 0.0,
     _always, "print('ok' if open('{target}/private.txt').read() == 'trainer data\\n' else 'no')"),
    ("fchmod a trainer file", "fchmod(0o777) on an open fd of a file outside",
     "read-only root; not the owner (root trainer)", STDIN_OK, 0.0, _mode_kept,
     "import os\nfd = os.open('{target}/private.txt', os.O_RDONLY)\nos.fchmod(fd, 0o777)\n"
     "print('ok')"),
    ("make a device node", "mknod /dev/mem's major:minor in the writable work dir",
     "seccomp (mknod/mknodat: EPERM); no CAP_MKNOD; nodev work tmpfs", STDIN_OK, 0.0, _always,
     "import os, stat\nos.mknod('mem', stat.S_IFCHR | 0o600, os.makedev(1, 1))\n"
     "print('ok' if os.path.exists('mem') else 'no')"),
    ("double fork + setsid", "a grandchild in its own session, left sleeping",
     "pid namespace: its init's exit kills the rest", STDIN_OK, 0.0, _nothing_left,
     "import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
     "        os.execv('/bin/sleep', ['sleep', '{sleep}'])\n    os._exit(0)\n"),
    ("posix_spawn(setsid=True)", "a new session through the low-level spawn API",
     "pid namespace", STDIN_OK, 0.0, _nothing_left,
     "import os\nos.posix_spawn('/bin/sleep', ['sleep', '{sleep}'], {{}}, setsid=True)\n"),
    ("spawn without an audit event", "_posixsubprocess.fork_exec with a new session",
     "pid namespace", STDIN_OK, 0.0, _nothing_left,
     "import _posixsubprocess, os\nr, w = os.pipe()\n_posixsubprocess.fork_exec("
     "[b'/bin/sleep', b'{sleep}'], [b'/bin/sleep'], True, (), None, None, -1, -1, -1, -1, -1, -1,"
     " r, w, True, True, -1, None, None, None, -1, None, False)\n"),
    ("kill the trainer by pid", "os.kill(trainer_pid, SIGKILL)",
     "pid namespace (the pid is not visible); unprivileged uid; seccomp and Landlock scoping"
     " without a pid namespace",
     STDIN_OK, 0.0, _victim_alive, "import os\nos.kill({victim}, 9)\nprint('ok')"),
    ("signal the trainer by pidfd", "pidfd_open(trainer_pid) + pidfd_send_signal",
     "seccomp (pidfd_*: EPERM); pid namespace", STDIN_OK, 0.0, _victim_alive,
     "import os, signal\nfd = os.pidfd_open({victim})\nsignal.pidfd_send_signal(fd, 9)\n"
     "print('ok')"),
    ("ptrace the trainer", "PTRACE_ATTACH to the trainer",
     "seccomp (ptrace, process_vm_*: EPERM); pid namespace", STDIN_OK, 0.0, _victim_alive,
     "import ctypes\nif ctypes.CDLL(None).ptrace(16, {victim}, 0, 0) == 0:\n    print('ok')"),
    ("new user namespace", "unshare(CLONE_NEWUSER) to regain capabilities",
     "seccomp (unshare, setns, clone with CLONE_NEW*: EPERM)", STDIN_OK, 0.0, _always,
     "import ctypes\nif ctypes.CDLL(None).unshare(0x10000000) == 0:\n    print('ok')"),
    ("remount / read-write", "mount(MS_REMOUNT) of /",
     "seccomp (mount family: EPERM); no CAP_SYS_ADMIN", STDIN_OK, 0.0, _always,
     "import ctypes\nif ctypes.CDLL(None).mount(b'none', b'/', None, 32 | 4096, None) == 0:\n"
     "    print('ok')"),
    ("inherited file descriptors", "look for any open fd beyond stdin/stdout/stderr",
     "close_fds and closerange before the program: only 0-2 (and the judge's pipe)", STDIN_OK,
     0.0, _always,
     "import os\nfor fd in range(3, 1024):\n    try:\n        os.fstat(fd)\n"
     "    except OSError:\n        continue\n    print('ok')\n    break"),
    ("forge pass lines", "write '1' lines into every fd (the old result channel)",
     "the judge counts passes outside the sandbox; nothing the program writes is read as a verdict",
     ASSERTS, 0.0, _always,
     "import os\nfor fd in range(1, 64):\n    try:\n        os.write(fd, b'1\\n1\\n1\\n')\n"
     "    except OSError:\n        pass\ndef f(x):\n    return 0"),
    ("find the tests by introspection", "walk frames, gc and modules for the test code",
     "the test code is only in the judge's process, never in the program's", ASSERTS, 0.0,
     _always,
     "import gc, re, sys\nseen = []\ndef grab(values):\n    for v in list(values):\n"
     "        seen.extend(w for w in (v, *(v.values() if isinstance(v, dict) else ()))"
     " if isinstance(w, str))\n"
     "frame = sys._getframe()\nwhile frame:\n    grab(frame.f_locals.values())\n"
     "    frame = frame.f_back\ntry:\n    grab(gc.get_objects())\nexcept Exception:\n    pass\n"
     "for m in list(sys.modules.values()):\n    grab(vars(m).values())\nANS = {{}}\n"
     "for s in seen:\n    for a, b in re.findall(r'f\\((\\d+)\\) == (\\d+)', s):\n"
     "        ANS[int(a)] = int(b)\ndef f(x):\n    return ANS.get(x)"),
    ("rigged equality", "return an int subclass whose == is always True",
     "only exact builtin types cross to the judge; the judge compares", ASSERTS, 0.0, _always,
     "class E(int):\n    def __eq__(self, other):\n        return True\n"
     "    __hash__ = int.__hash__\ndef f(x):\n    return E(0)"),
    ("patch the answering loop", "replace the sandbox's reply encoder to claim success",
     "the judge decodes values and evaluates the asserts itself", ASSERTS, 0.0, _always,
     "import sys\nrpc = sys.modules.get('sandbox_rpc')\nif rpc:\n"
     "    rpc.encode = lambda value, depth=0: True\ndef f(x):\n    return 0"),
    ("exit 0 before the tests", "sys.exit(0) at import time",
     "the verdict is the judge's count, not the exit status", ASSERTS, 0.0, _always,
     "import sys\nsys.exit(0)\ndef f(x):\n    return 2 * x"),
    ("os._exit(0) before the tests", "os._exit(0) at import time",
     "the verdict is the judge's count, not the exit status", ASSERTS, 0.0, _always,
     "import os\nos._exit(0)"),
    ("os._exit(0) inside a call", "exit 0 when the first test calls",
     "the judge sees the pipe close: that call and the rest fail", ASSERTS, 0.0, _always,
     "import os\ndef f(x):\n    os._exit(0)"),
    ("correct program (stdin)", "none: a correct solution", "scores 1", STDIN_OK, 1.0, _always,
     "print('ok')"),
    ("correct program (asserts)", "none: a correct solution", "scores 1", ASSERTS, 1.0, _always,
     "def f(x):\n    return 2 * x"),
]  # fmt: skip


def run_cases(code_module, names=None, **limits) -> list[dict]:
    """Run the cases through `code_module.CodeReward` (audit hook off, `limits` changed); one
    row per case."""
    target = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"r1jax-escape-{uuid.uuid4().hex}")
    os.mkdir(target)
    os.chmod(target, 0o777)
    for name, mode in (("shared.txt", 0o666), ("private.txt", 0o644)):
        with open(os.path.join(target, name), "w") as f:
            f.write("trainer data\n")
        os.chmod(os.path.join(target, name), mode)
    victim = subprocess.Popen(["sleep", "600"])
    fn = code_module.CodeReward(mode="all", timeout_s=3.0, memory_mb=512)
    fn.limits.update(audit_hook=False, **limits)
    rows = []
    try:
        for i, (name, _, _, tests, expected, check, program) in enumerate(CASES):
            if names is not None and name not in names:
                continue
            if victim.poll() is not None:  # an earlier case got through: a new victim
                victim = subprocess.Popen(["sleep", "600"])
            ctx = dict(target=target, victim=victim, marker=uuid.uuid4().hex)
            ctx["sleep"] = f"{500 + i}.{int(ctx['marker'][:6], 16)}"  # a unique sleep argument
            src = program.format(**{**ctx, "victim": victim.pid})
            before = dict(code_module.COUNTERS)
            score = fn.score(f"```python\n{src}\n```", tests)
            after = code_module.COUNTERS
            new = [k for k in after if after[k] > before.get(k, 0)]
            missing = sorted(k[16:] for k in new if k.startswith("sandbox/missing/"))
            rows.append(dict(name=name, score=score, expected=expected, contained=check(ctx)))
            rows[-1]["missing"] = missing
    finally:
        victim.kill()
        victim.wait()
        for name in os.listdir(target):
            os.unlink(os.path.join(target, name))
        os.rmdir(target)
    return rows


def markdown_table() -> str:
    lines = [
        "| attempt | what the program tries | how it is contained | expected score |",
        "| --- | --- | --- | --- |",
    ]
    for name, attack, contained_by, tests, expected, _, _ in CASES:
        kind = "stdin/stdout" if tests is STDIN_OK else "asserts"
        lines.append(f"| {name} ({kind}) | {attack} | {contained_by} | {expected:g} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the unprivileged run: `python3 sandbox_escape_cases.py PKG_DIR`
    sys.path.insert(0, sys.argv[1])
    import sbx.code

    print(json.dumps(run_cases(sbx.code)))
