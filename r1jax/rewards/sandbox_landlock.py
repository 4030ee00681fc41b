"""Landlock for the code sandbox: writes only beneath the work dir (and to /dev/null), reads
only beneath the work dir and the system and interpreter directories (not the trainer's data,
e.g. a world-readable dataset file holding the expected outputs); with
kernel ABI >= 4 no TCP bind/connect; with ABI >= 6 no signals or abstract unix sockets reaching
processes outside the sandbox.

Standard library only (imported as a sibling by the sandbox child). Unlike namespaces, Landlock
needs no privilege, so it also holds for an unprivileged trainer on a kernel that refuses user
namespaces. Layout from linux/landlock.h: struct landlock_ruleset_attr {u64 handled_access_fs;
u64 handled_access_net; u64 scoped} (its size tells the kernel which fields we know), struct
landlock_path_beneath_attr {u64 allowed_access; s32 parent_fd} (packed).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # same on x86_64 and arm64
CREATE_RULESET_VERSION, RULE_PATH_BENEATH = 1, 1
PR_SET_NO_NEW_PRIVS = 38
WRITE_FILE, READ_FILE, READ_DIR, TRUNCATE = 1 << 1, 1 << 2, 1 << 3, 1 << 14
READ = READ_FILE | READ_DIR
# Readable besides the work dir and the interpreter's prefix: libraries, config, a few devices.
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# write-side rights: write, remove, make char/dir/reg/sock/fifo/block/symlink, refer, truncate
_FS_WRITE_BY_ABI = {1: 0x1FF2, 2: 0x3FF2, 3: 0x7FF2}
NET_TCP = 0b11  # BIND_TCP | CONNECT_TCP
SCOPE_SIGNAL_AND_ABSTRACT_UNIX = 0b11  # signals / abstract unix sockets only inside


def install(workdir: str, readable: tuple = ()) -> str | None:
    """Restrict this process and its future children; `readable`: more directories to read
    (the interpreter's). None on success, else why not."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), CREATE_RULESET_VERSION)
    if abi < 1:
        return f"landlock unavailable: {errno.errorcode.get(ctypes.get_errno(), '?')}"
    fs = _FS_WRITE_BY_ABI[min(abi, 3)] | READ
    attr = struct.pack(
        "<QQQ", fs, NET_TCP if abi >= 4 else 0, SCOPE_SIGNAL_AND_ABSTRACT_UNIX if abi >= 6 else 0
    )
    attr = attr[: 8 if abi < 4 else 16 if abi < 6 else 24]
    fd = libc.syscall(SYS_CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), 0)
    if fd < 0:
        return f"landlock_create_ruleset: {errno.errorcode.get(ctypes.get_errno(), '?')}"
    try:
        rules = [(workdir, fs), ("/dev/null", READ_FILE | WRITE_FILE | (fs & TRUNCATE))]
        rules += [(d, READ) for d in SYSTEM_DIRS + tuple(readable)]
        rules += [(d, READ_FILE) for d in DEVICES[1:]]
        for path, allowed in rules:
            try:
                parent = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # e.g. no /lib32 here
            try:
                rule = struct.pack("<Qi", allowed, parent)
                if libc.syscall(SYS_ADD_RULE, fd, RULE_PATH_BENEATH, rule, 0) != 0:
                    return f"landlock_add_rule({path}): {errno.errorcode.get(ctypes.get_errno())}"
            finally:
                os.close(parent)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return "PR_SET_NO_NEW_PRIVS failed"
        if libc.syscall(SYS_RESTRICT_SELF, fd, 0) != 0:
            return f"landlock_restrict_self: {errno.errorcode.get(ctypes.get_errno(), '?')}"
    finally:
        os.close(fd)
    return None
