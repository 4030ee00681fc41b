"""Sandbox bootstrap: run as `python -I -B _sandbox_child.py CONFIG` by r1jax.rewards.code.

Never imported. It reads its config (then deletes it), confines itself, installs an audit hook
and only then runs the untrusted program, so every line of that program runs confined:
1. a new network namespace (no interfaces) when the kernel lets us (root / CAP_SYS_ADMIN);
2. rlimits: CPU seconds, address space, file size (caps stdout), open files, processes, no core;
3. drop to the unprivileged `nobody` uid/gid when started as root (RLIMIT_NPROC binds only then);
4. die with the parent (PR_SET_PDEATHSIG) so a killed reward worker leaves no orphan;
5. a `sys.addaudithook` hook, which cannot be removed: no fork/exec/subprocess/os.system, no
   sockets, no ctypes, no signals to other processes, no gc object walking, and no writes,
   renames, deletes or links outside the working directory.
This stops what a policy writes by accident (fork bombs, `rm -rf`, downloads, runaway memory or
output); it is not a boundary against a deliberate attacker, for which use a container sandbox.
"""

import ast
import builtins
import ctypes
import json
import os
import resource
import signal
import stat
import sys

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
NOBODY = 65534
_BLOCKED = (
    "os.fork",
    "os.forkpty",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.system",
    "os.kill",
    "os.killpg",
    "os.startfile",
    "subprocess.",
    "pty.",
    "socket.",
    "ctypes.",
    "resource.setrlimit",
    "resource.prlimit",
    "gc.get_objects",
    "gc.get_referrers",
    "gc.get_referents",
    "sys.remote_exec",
)
_NO_LINKS = ("os.link", "os.symlink")
_PATH_EVENTS = (
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.truncate",
    "os.utime",
    "os.setxattr",
    "os.removexattr",
    "shutil.rmtree",
    "shutil.move",
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _world_readable(path):
    """Can `nobody` reach `path` (o+x on every ancestor) and list/read it (o+rx)?"""
    path = os.path.realpath(path)
    if os.stat(path).st_mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
        return False
    while path != os.path.dirname(path):
        path = os.path.dirname(path)
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
    return True


def _confine(cfg):
    """Apply the confinement layers; returns which optional ones took effect."""
    libc = ctypes.CDLL(None, use_errno=True)
    netns = cfg["isolate_network"] and libc.unshare(CLONE_NEWNET) == 0
    cpu = max(1, int(cfg["cpu_s"] + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (cfg["memory_bytes"], cfg["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["fsize_bytes"], cfg["fsize_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (cfg["nofile"], cfg["nofile"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    dropped = False
    # As `nobody` the program could not import the standard library when Python is installed
    # somewhere private (e.g. under /root); then we keep the uid and rely on the other layers.
    if (
        cfg["drop_privileges"]
        and os.geteuid() == 0
        and _world_readable(os.path.dirname(os.__file__))
    ):
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            dropped = True
        except OSError:
            pass  # e.g. no setuid capability: run as is, the other layers still apply
    # Set after the uid change, which clears it. Then re-check: the parent may already be gone.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != cfg["ppid"]:
        os._exit(137)
    return {"netns": int(netns), "nobody": int(dropped)}


def _install_audit_hook(workdir):
    workdir = os.path.realpath(workdir)
    prefix = workdir + os.sep
    abspath, fsdecode = os.path.abspath, os.fsdecode

    def inside(path):
        if isinstance(path, int):  # an already-open file descriptor
            return True
        try:
            p = abspath(fsdecode(path))
        except (TypeError, ValueError):
            return False
        return p == workdir or p.startswith(prefix)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in mode for c in "wax+")) or (
                flags is not None and flags & _WRITE_FLAGS
            )
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing outside the working directory: {path}")
        elif event.startswith(_BLOCKED) or event in _NO_LINKS:
            raise PermissionError(f"sandbox: {event} is not allowed")
        elif event in _PATH_EVENTS:
            for a in args:
                if isinstance(a, (str, bytes, os.PathLike)) and not inside(a):
                    raise PermissionError(f"sandbox: {event} outside the working directory")

    sys.addaudithook(hook)


def _run_asserts(program, stmts, out):
    n_tests = sum(isinstance(s, (ast.Assert, ast.Expr)) for s in stmts)
    ns = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        exec(compile(program, "<solution>", "exec"), ns)
    except BaseException:
        return
    for stmt in stmts:
        try:
            exec(compile(ast.Module([stmt], []), "<tests>", "exec"), ns)
            ok = True
        except BaseException:
            ok = False
        if isinstance(stmt, (ast.Assert, ast.Expr)):
            out.write(f"{int(ok)}\n")
            out.flush()
        elif not ok:
            return  # a failed setup statement fails the tests after it
    if n_tests == 0:
        out.write("1\n")  # test code without asserts: passes if it ran through
        out.flush()


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    os.unlink(sys.argv[1])
    out = os.fdopen(cfg["result_fd"], "w")
    os.chdir(cfg["workdir"])
    isolation = _confine(cfg)
    out.write(json.dumps(isolation) + "\n")  # first line: which optional layers are active
    out.flush()
    _install_audit_hook(cfg["workdir"])
    sys.argv = ["solution.py"]
    if cfg["mode"] == "assert":
        _run_asserts(cfg["program"], ast.parse(cfg["test_code"]).body, out)
        os._exit(0)  # skip the program's atexit handlers and non-daemon threads
    out.close()
    exec(compile(cfg["program"], "<solution>", "exec"), {"__name__": "__main__"})


if __name__ == "__main__":
    main()
