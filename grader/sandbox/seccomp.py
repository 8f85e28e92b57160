"""A tiny seccomp filter, built by hand: deny a few syscalls with an errno.

The worker denies one call, `setsid`: with the scheduler's autogroups on (the
default on desktop Linux), every new session gets an equal share of the CPU,
so 48 `setsid` spinners would take 48 shares from an honest classmate's worker
running beside them. Denied, they stay in their worker's one session and share.
Calls from a foreign ABI (i386 or x32 on x86_64) are denied outright, so the
filter cannot be stepped around.

`program()` is also what the tests use to imitate a container's default profile.
"""

from __future__ import annotations

import ctypes
import errno as errnos
import platform
import struct

from grader.sandbox import kernel

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
NUMBERS = {
    "x86_64": {"setsid": 112, "unshare": 272, "setns": 308, "mount": 165, "umount2": 166,
               "pivot_root": 155, "clone": 56, "clone3": 435, "landlock_create_ruleset": 444},
    "aarch64": {"setsid": 157, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39,
                "pivot_root": 41, "clone": 220, "clone3": 435, "landlock_create_ruleset": 444},
}
X32_BIT = 0x40000000

_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (args little-endian)


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(rules: list[tuple[str, int, int | None]], machine: str | None = None) -> bytes | None:
    """BPF for `rules`: (syscall name, errno, arg0 mask or None). With a mask the
    call is denied only when its first argument has one of those bits set (as
    for clone's namespace flags). None where the machine is not known."""
    machine = machine or platform.machine()
    if machine not in AUDIT_ARCH:
        return None
    numbers = NUMBERS[machine]
    code = [_op(_LD_W_ABS, _ARCH), _op(_JEQ, AUDIT_ARCH[machine], 1, 0),
            _op(_RET, _ERRNO | errnos.EPERM), _op(_LD_W_ABS, _NR)]
    if machine == "x86_64":
        code += [_op(_JGE, X32_BIT, 0, 1), _op(_RET, _ERRNO | errnos.EPERM)]
    for name, errno, mask in rules:
        if mask is None:
            code += [_op(_JEQ, numbers[name], 0, 1), _op(_RET, _ERRNO | errno)]
        else:
            code += [_op(_JEQ, numbers[name], 0, 4), _op(_LD_W_ABS, _ARG0),
                     _op(_JSET, mask, 0, 1), _op(_RET, _ERRNO | errno), _op(_LD_W_ABS, _NR)]
    code.append(_op(_RET, _ALLOW))
    return b"".join(code)


def install(rules: list[tuple[str, int, int | None]]) -> bool:
    """Load the filter on this thread (no_new_privs must be set). False where
    the machine is not known; OSError where the kernel refuses."""
    raw = program(rules)
    if raw is None:
        return False
    buffer = ctypes.create_string_buffer(raw, len(raw))

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = _Prog(len(raw) // 8, ctypes.addressof(buffer))
    kernel.prctl(kernel.PR_SET_SECCOMP, 2, ctypes.addressof(prog))  # SECCOMP_MODE_FILTER
    return True


WORKER_RULES = [("setsid", errnos.EPERM, None)]
