"""The Linux calls the sandbox needs that Python 3.11's `os` lacks, through ctypes.

`os.unshare` and `os.setns` arrive only in Python 3.12, and `mount`,
`pivot_root`, `prctl` and `capset` not at all. Each wrapper raises OSError
with the call's name, as `os` would.
"""

from __future__ import annotations

import ctypes
import os
import platform

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP = 1, 4, 22
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 36, 38

# Syscalls glibc has no wrapper for, by machine (the generic table serves aarch64).
_SYSCALLS = {"x86_64": {"pivot_root": 155}, "aarch64": {"pivot_root": 41}}

_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def check(rc: int, what: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def _b(text: str | None):
    return text.encode() if text is not None else None


def unshare(flags: int) -> None:
    check(libc().unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    check(libc().setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    check(libc().mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
           f"mount {target}")


def umount(target: str, flags: int = 0) -> None:
    check(libc().umount2(_b(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    number = _SYSCALLS.get(platform.machine(), {}).get("pivot_root")
    if number is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {platform.machine()}")
    check(libc().syscall(ctypes.c_long(number), _b(new_root), _b(put_old)), "pivot_root")


def prctl(option: int, arg: int = 0, arg3: int = 0) -> int:
    return check(libc().prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), 0, 0), "prctl")


def drop_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets (ambient follows)."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    check(libc().capset(header, data), "capset")


def write_text(path: str, text: str) -> None:
    """One write(2) of `text`, as /proc's uid_map and friends require."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
