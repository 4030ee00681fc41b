"""Sandbox supervisor: run as `python3 -I -B -S _sandbox_child.py CONFIG_FD` by r1jax.rewards.code.

Never imported; standard library only, so the system Python (readable by `nobody`) can run it.
Three processes, only the last of which runs untrusted code:
- the supervisor (this script): reads its config, makes itself non-dumpable and a child
  subreaper, enters new pid, mount, network, IPC and UTS namespaces (through a user namespace
  when not root), forks the init, judges assert tests (sandbox_rpc.judge) and writes the report
  to a pipe that no sandboxed process holds. Outside the new pid namespace: invisible from it.
- the init (pid 1 of the namespace): remounts / read-only (recursively), mounts a fresh /proc and
  a private tmpfs work dir, forks the program, reaps, exits with its status. When it exits the
  kernel kills every process left in the namespace, so nothing outlives the call.
- the program: rlimits (CPU, address space, file size = the output cap, open files, processes,
  no core), then an unprivileged uid/gid (root) or no capabilities (user namespace), Landlock
  (sandbox_landlock: writes only in the work dir, no signals out; needs no privilege, so it also
  holds where namespaces are refused), no_new_privs and the seccomp filter (sandbox_seccomp),
  only fds 0-2 (and the judge's pipe) left open, the Python audit hook, and only then the
  program: as __main__ on stdin/stdout, or (assert tests)
  serving calls from the judge (sandbox_rpc.serve).
A layer the kernel refuses is reported missing with its reason (the caller warns and counts);
without a pid namespace, orphans reparent to the subreaper supervisor, which kills them.
"""

import ctypes
import errno
import marshal
import os
import resource
import signal
import struct
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox_landlock  # noqa: E402
import sandbox_seccomp  # noqa: E402

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 0x4000, 1 << 18
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, AT_RECURSIVE, AT_FDCWD, SYS_MOUNT_SETATTR = (
    1,
    2,
    0x8000,
    -100,
    442,
)
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36
EXIT_MEMORY = 57  # the program died of MemoryError (a hint for the memory-cap metric only)
EXIT_SETUP = 70  # a confinement step failed that must not be skipped

_libc = ctypes.CDLL(None, use_errno=True)


def _err() -> str:
    return errno.errorcode.get(ctypes.get_errno(), "?")


def _put(fd, obj):
    """Records between our own processes, written before any untrusted code runs (marshal:
    data only, no imports; never used on anything the program can write)."""
    data = marshal.dumps(obj)
    os.write(fd, struct.pack(">I", len(data)) + data)


def _records(data):
    while len(data) >= 4:
        (n,) = struct.unpack(">I", data[:4])
        yield marshal.loads(data[4 : 4 + n])
        data = data[4 + n :]


def _print_exc():
    traceback.print_exc()


# ------------------------------------------------------------------------------------ supervisor


def _unshare(cfg, missing):
    """Enter the namespaces; returns the set entered."""
    if not cfg["namespaces"]:
        missing.update(dict.fromkeys(("pidns", "mountns", "netns", "ipcns"), "disabled"))
        return set()
    flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
    flags |= CLONE_NEWNET if cfg["isolate_network"] else 0
    userns = os.geteuid() != 0
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(flags | (CLONE_NEWUSER if userns else 0)) != 0:
        why = f"unshare: {_err()}"
        missing.update(dict.fromkeys(("pidns", "mountns", "netns", "ipcns"), why))
        return set()
    if userns:  # map only ourselves: the program keeps our uid, without capabilities
        maps = {"setgroups": "deny", "uid_map": f"{uid} {uid} 1", "gid_map": f"{gid} {gid} 1"}
        try:
            for path, text in maps.items():
                with open(f"/proc/self/{path}", "w") as f:
                    f.write(text)
        except OSError as e:
            why = f"user namespace map: {e.strerror}"
            missing.update(dict.fromkeys(("pidns", "mountns", "netns", "ipcns"), why))
            return {"userns"}
    entered = {"pidns", "mountns", "ipcns"}
    entered |= {"netns"} if cfg["isolate_network"] else set()
    entered |= {"userns"} if userns else set()
    if not cfg["isolate_network"]:
        missing["netns"] = "disabled"
    return entered


def _sweep_orphans():
    """Without a pid namespace: kill what reparented to us (we are a child subreaper)."""
    me = str(os.getpid())
    for _ in range(100):
        kids = []
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        kids.append(int(pid))
            except (OSError, ValueError, IndexError):
                continue
        if not kids:
            return
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def main():
    with os.fdopen(int(sys.argv[1]), "rb") as f:
        cfg = marshal.loads(f.read())
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # Die with the caller (e.g. a reward worker killed by the pool): the init follows us.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != cfg["ppid"]:
        os._exit(EXIT_SETUP)  # it died before the line above
    missing = {}
    entered = _unshare(cfg, missing)
    # After the uid map is written (a non-dumpable process's /proc files belong to root):
    # from here no same-uid process may open our /proc/<pid>/mem or fds.
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    judge_end = prog_end = None
    if cfg["mode"] == "assert":
        import _socket  # assert mode only: the judge's channel

        import sandbox_rpc  # before the fork: the program serves calls with it

        judge_sock, prog_sock = _socket.socketpair()
        judge_end, prog_end = judge_sock.detach(), prog_sock.detach()
    layers_r, layers_w = os.pipe()
    init = os.fork()
    if init == 0:
        try:
            for fd in (cfg["report_fd"], cfg["tests_fd"], judge_end, layers_r):
                if fd is not None and fd >= 0:
                    os.close(fd)
            _init(cfg, entered, layers_w, prog_end)
        finally:
            os._exit(EXIT_SETUP)
    os.close(layers_w)
    # At the deadline the init dies (and with it the namespace); we still report.
    signal.signal(signal.SIGALRM, lambda *_: os.kill(init, signal.SIGKILL))
    signal.setitimer(signal.ITIMER_REAL, max(0.001, cfg["deadline"] - time.monotonic()))
    report = {"passed": 0, "memory_errors": 0}
    if judge_end is not None:
        os.close(prog_end)
        with os.fdopen(cfg["tests_fd"], "rb") as f:  # read only now: the program never had it
            tests = f.read().decode()
        report.update(sandbox_rpc.judge(judge_end, tests, cfg["deadline"], cfg["max_msg_bytes"]))
        os.kill(init, signal.SIGKILL)
    _, status, ru = os.wait4(init, 0)
    signal.setitimer(signal.ITIMER_REAL, 0)
    if "pidns" not in entered:
        _sweep_orphans()
    with os.fdopen(layers_r, "rb") as f:
        for record in _records(f.read()):
            missing.update(record)
    report.update(
        exit=os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status,
        cpu_s=ru.ru_utime + ru.ru_stime,
        maxrss_kb=ru.ru_maxrss,
        deadline_hit=time.monotonic() >= cfg["deadline"],
        entered=sorted(entered),
        missing=missing,
    )
    os.write(cfg["report_fd"], marshal.dumps(report))


# ------------------------------------------------------------------------------------------ init


def _mount(cfg, entered, missing):
    """In the new mount namespace: / read-only, fresh /proc, private tmpfs work dir."""
    if _libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        missing["mountns"] = f"make / private: {_err()}"
        return
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    if _libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, attr, 32) != 0:
        missing["readonly_root"] = f"mount_setattr: {_err()}"
    if "pidns" in entered:
        if _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) != 0:
            missing["proc"] = f"mount proc: {_err()}"
    dropping = os.geteuid() == 0 and cfg["drop_privileges"]
    uid, gid = (cfg["uid"], cfg["gid"]) if dropping else (os.getuid(), os.getgid())
    opts = f"size={cfg['work_bytes']},mode=0700,uid={uid},gid={gid}".encode()
    if _libc.mount(b"tmpfs", cfg["workdir"].encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts) != 0:
        missing["work_tmpfs"] = f"mount tmpfs: {_err()}"


def _init(cfg, entered, layers_w, prog_end):
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the supervisor killed: so are we
    missing = {}
    if "mountns" in entered:
        _mount(cfg, entered, missing)
    else:
        missing["readonly_root"] = "no mount namespace"
    _put(layers_w, missing)
    pid = os.fork()
    if pid == 0:
        try:
            _program(cfg, entered, layers_w, prog_end)
        except BaseException:  # noqa: BLE001 - a confinement step failed: never run the program
            _print_exc()
        os._exit(EXIT_SETUP)
    os.close(layers_w)
    if prog_end is not None:
        os.close(prog_end)
    while True:  # as pid 1 we also reap the program's orphans
        try:
            done, status = os.wait()
        except ChildProcessError:
            os._exit(EXIT_SETUP)
        if done == pid:
            os._exit(status >> 8 if os.WIFEXITED(status) else 128 + (status & 0x7F))


# --------------------------------------------------------------------------------------- program


def _drop(cfg, entered, missing):
    if os.geteuid() == 0 and cfg["drop_privileges"]:
        os.setgroups([])
        os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])  # clears every capability
        return
    missing["uid"] = "disabled" if os.geteuid() == 0 else "the trainer is not root"
    if "userns" in entered:  # we hold every capability inside the user namespace: drop them
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
        if _libc.capset(header, (ctypes.c_uint32 * 6)()) != 0:
            raise OSError(f"capset: {_err()}")


def _program(cfg, entered, layers_w, prog_end):
    missing = {}
    os.chdir(cfg["workdir"])
    cpu = max(1, int(cfg["cpu_s"] + 0.999))
    for res, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (cfg["memory_bytes"],) * 2),
        (resource.RLIMIT_FSIZE, (cfg["fsize_bytes"],) * 2),
        (resource.RLIMIT_NOFILE, (cfg["nofile"],) * 2),
        (resource.RLIMIT_NPROC, (cfg["nproc"],) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(res, value)
    _drop(cfg, entered, missing)
    if "pidns" not in entered:  # die with the supervisor (PDEATHSIG is cleared by setuid)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    stdlib = os.path.dirname(os.__file__)
    why = sandbox_landlock.install(cfg["workdir"], (sys.base_prefix, sys.prefix, stdlib))
    if why:
        missing["landlock"] = why
    if cfg["seccomp"]:
        why = sandbox_seccomp.install(None if "pidns" in entered else os.getpid())
        if why:
            missing["seccomp"] = why
    else:
        missing["seccomp"] = "disabled"
    if not cfg["audit_hook"]:
        missing["audit_hook"] = "disabled"
    _put(layers_w, missing)
    if prog_end is not None:
        os.dup2(prog_end, 3)
    os.closerange(3 if prog_end is None else 4, 1 << 16)  # nothing inherited reaches the program
    if cfg["audit_hook"]:
        _install_audit_hook(cfg["workdir"])
    sys.argv = ["solution.py"]
    if prog_end is not None:
        sys.modules["sandbox_rpc"].serve(3, cfg["program"], cfg["max_msg_bytes"])
        os._exit(0)
    try:
        exec(compile(cfg["program"], "<solution>", "exec"), {"__name__": "__main__"})
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (e.code is not None)
    except MemoryError:
        code = EXIT_MEMORY
    except BaseException:  # noqa: BLE001
        _print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code & 0xFF)


# ----------------------------------------------------------------- the Python audit hook (extra)

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


def _install_audit_hook(workdir):
    """Refuses, at the Python level, what a program writes by accident (fork bombs, `rm -rf`,
    downloads). Not the boundary - the kernel layers above are - but it fails such programs
    early and loudly, also where a kernel layer is missing."""
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


if __name__ == "__main__":
    main()
