"""Seccomp filter for the code sandbox: a classic-BPF program built with struct, loaded by prctl.

Standard library only: the sandbox child imports this file as a sibling under the system Python.
The filter runs over `struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}` (offsets 0, 4,
8, 16 + 8*i; args read by their low 32-bit word, little-endian). A foreign architecture (i386 via
int 0x80) or the x32 ABI is killed outright: its syscall numbers would slip past the table.
Denied with EPERM: tracing and other processes' memory, device nodes, mounts and namespaces,
kernel/keyring/BPF/io_uring interfaces, signals and rlimits aimed at other processes (without a
pid namespace; inside one only sandboxed processes are visible) and every pidfd call. clone3
returns ENOSYS (its flags live in memory a filter cannot read), so libc falls back to clone, whose
namespace flags are checked.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

# BPF opcodes (linux/bpf_common.h) and seccomp return values (linux/seccomp.h).
LD_ABS_W, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_KILL_PROCESS, RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
X32_SYSCALL_BIT = 0x40000000
CLONE_NEW_ANY = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET

DENIED = (
    "ptrace process_vm_readv process_vm_writev kcmp migrate_pages move_pages process_madvise "
    "mknod mknodat mount umount2 pivot_root chroot unshare setns fsopen fsconfig fsmount "
    "move_mount open_tree fspick mount_setattr open_by_handle_at name_to_handle_at "
    "kexec_load kexec_file_load init_module finit_module delete_module reboot swapon swapoff acct "
    "bpf perf_event_open userfaultfd keyctl add_key request_key iopl ioperm "
    "io_uring_setup io_uring_enter io_uring_register pidfd_open pidfd_send_signal pidfd_getfd"
).split()
SIGNALS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")  # arg0: a pid

# Syscall numbers from the kernel's uapi headers (asm/unistd_64.h; asm-generic/unistd.h for arm64).
_X86_64 = dict(
    ptrace=101, process_vm_readv=310, process_vm_writev=311, kcmp=312, migrate_pages=256,
    move_pages=279, process_madvise=440, mknod=133, mknodat=259, mount=165, umount2=166,
    pivot_root=155, chroot=161, unshare=272, setns=308, fsopen=430, fsconfig=431, fsmount=432,
    move_mount=429, open_tree=428, fspick=433, mount_setattr=442, open_by_handle_at=304,
    name_to_handle_at=303, kexec_load=246, kexec_file_load=320, init_module=175,
    finit_module=313, delete_module=176, reboot=169, swapon=167, swapoff=168, acct=163, bpf=321,
    perf_event_open=298, userfaultfd=323, keyctl=250, add_key=248, request_key=249, iopl=172,
    ioperm=173, io_uring_setup=425, io_uring_enter=426, io_uring_register=427, pidfd_open=434,
    pidfd_send_signal=424, pidfd_getfd=438, kill=62, tkill=200, tgkill=234, rt_sigqueueinfo=129,
    rt_tgsigqueueinfo=297, prlimit64=302, clone=56, clone3=435,
)  # fmt: skip
_AARCH64 = dict(
    ptrace=117, process_vm_readv=270, process_vm_writev=271, kcmp=272, migrate_pages=238,
    move_pages=239, process_madvise=440, mknodat=33, mount=40, umount2=39, pivot_root=41,
    chroot=51, unshare=97, setns=268, fsopen=430, fsconfig=431, fsmount=432, move_mount=429,
    open_tree=428, fspick=433, mount_setattr=442, open_by_handle_at=265, name_to_handle_at=264,
    kexec_load=104, kexec_file_load=294, init_module=105, finit_module=273, delete_module=106,
    reboot=142, swapon=224, swapoff=225, acct=89, bpf=280, perf_event_open=241, userfaultfd=282,
    keyctl=219, add_key=217, request_key=218, io_uring_setup=425, io_uring_enter=426,
    io_uring_register=427, pidfd_open=434, pidfd_send_signal=424, pidfd_getfd=438, kill=129,
    tkill=130, tgkill=131, rt_sigqueueinfo=138, rt_tgsigqueueinfo=240, prlimit64=261, clone=220,
    clone3=435,
)  # fmt: skip
ARCHES = {"x86_64": (0xC000003E, _X86_64), "aarch64": (0xC00000B7, _AARCH64)}


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k & 0xFFFFFFFF)


def build_filter(machine: str, own_pid: int | None) -> list[tuple[int, int, int, int]]:
    """The BPF program as (code, jt, jf, k) rows. `own_pid`: the only pid that signals and
    prlimit may name (besides prlimit's 0 = self); None inside a pid namespace (signals allowed:
    only sandboxed processes are visible there)."""
    audit_arch, nrs = ARCHES[machine]
    deny = RET_ERRNO | errno.EPERM
    prog = [_ins(LD_ABS_W, 4), _ins(JEQ_K, audit_arch, 1, 0), _ins(RET_K, RET_KILL_PROCESS)]
    prog += [_ins(LD_ABS_W, 0), _ins(JGE_K, X32_SYSCALL_BIT, 0, 1), _ins(RET_K, RET_KILL_PROCESS)]
    for name in DENIED:
        if name in nrs:  # e.g. arm64 has no mknod, only mknodat
            prog += [_ins(JEQ_K, nrs[name], 0, 1), _ins(RET_K, deny)]
    prog += [_ins(JEQ_K, nrs["clone3"], 0, 1), _ins(RET_K, RET_ERRNO | errno.ENOSYS)]
    # clone: a new namespace from inside would undo the layers around it.
    prog += [_ins(JEQ_K, nrs["clone"], 0, 4), _ins(LD_ABS_W, 16), _ins(JSET_K, CLONE_NEW_ANY, 0, 1)]
    prog += [_ins(RET_K, deny), _ins(RET_K, RET_ALLOW)]
    # arg0 must be allowed_pid, else EPERM; the syscall number is reloaded by nobody: each
    # block either returns or is skipped whole with the number still in the accumulator.
    guarded = [("prlimit64", 0)] + [(s, own_pid) for s in SIGNALS if own_pid is not None]
    for name, allowed_pid in guarded:
        prog += [_ins(JEQ_K, nrs[name], 0, 4), _ins(LD_ABS_W, 16)]
        prog += [_ins(JEQ_K, allowed_pid, 1, 0), _ins(RET_K, deny), _ins(RET_K, RET_ALLOW)]
    return prog + [_ins(RET_K, RET_ALLOW)]


def install(own_pid: int | None) -> str | None:
    """Set no_new_privs and load the filter into this (single-threaded) process.
    Returns None on success, else why not (the caller warns and counts it)."""
    machine = os.uname().machine
    if machine not in ARCHES:
        return f"no syscall table for {machine}"
    prog = build_filter(machine, own_pid)
    rows = b"".join(struct.pack("HBBI", *row) for row in prog)
    buf = ctypes.create_string_buffer(rows, len(rows))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [
        ctypes.c_int,
        ctypes.c_ulong,
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        return f"PR_SET_NO_NEW_PRIVS: {errno.errorcode.get(ctypes.get_errno(), '?')}"
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        return f"PR_SET_SECCOMP: {errno.errorcode.get(ctypes.get_errno(), '?')}"
    return None
