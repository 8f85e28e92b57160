"""Landlock (Linux >= 5.13): an unprivileged filesystem allowlist, for where
namespaces are not allowed (a container without CAP_SYS_ADMIN, say).

Once a process restricts itself it, and everything it forks, may open only
what the rules allow: here, read and execute below the allowlisted folders,
read and write below the worker's private folder. Landlock also forbids
ptrace of any process outside the sandbox; ABI 4 adds TCP (no rules: no TCP
at all) and ABI 6 scopes signals and abstract Unix sockets to the sandbox.
"""

from __future__ import annotations

import ctypes
import functools
import os
import stat
import struct

from grader.sandbox import kernel

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # one number on every machine
_VERSION = 1  # LANDLOCK_CREATE_RULESET_VERSION
_PATH_BENEATH = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1, 2, 4, 8
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | (1 << 14) | (1 << 15)  # what applies to a non-folder
_TCP = 3  # bind and connect
_SCOPES = 3  # abstract Unix sockets and signals


@functools.cache
def abi() -> int:
    """The kernel's Landlock ABI version, 0 where there is none."""
    try:
        rc = kernel.libc().syscall(ctypes.c_long(_CREATE_RULESET), None, ctypes.c_size_t(0),
                                   ctypes.c_uint32(_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(rc, 0)


def _handled_fs(version: int) -> int:
    return _FS_BY_ABI[max(v for v in _FS_BY_ABI if v <= version)]


def open_paths(paths) -> list[int]:
    """O_PATH descriptors for rules, opened while the paths are still reachable."""
    fds = []
    for path in paths:
        try:
            fds.append(os.open(path, os.O_PATH | os.O_CLOEXEC))
        except OSError:
            pass
    return fds


def restrict(read_fds: list[int], write_fds: list[int], version: int) -> None:
    """Restrict this process, and all it forks, to the given folders: read and
    execute below `read_fds`, everything below `write_fds`; no TCP (ABI 4) and
    no signals or abstract sockets across the wall (ABI 6). `no_new_privs` must
    already be set (it is, in a worker)."""
    handled = _handled_fs(version)
    attr = struct.pack("=QQQ", handled, _TCP if version >= 4 else 0, _SCOPES if version >= 6 else 0)
    size = 8 if version < 4 else (16 if version < 6 else 24)
    call = kernel.libc().syscall
    ruleset = call(ctypes.c_long(_CREATE_RULESET), ctypes.c_char_p(attr), ctypes.c_size_t(size),
                   ctypes.c_uint32(0))
    kernel.check(ruleset, "landlock_create_ruleset")
    try:
        for fds, access in ((read_fds, EXECUTE | READ_FILE | READ_DIR), (write_fds, handled)):
            for fd in fds:
                allowed = access if _is_dir(fd) else access & _FILE_ONLY
                rule = struct.pack("=Qi", allowed & handled, fd)
                kernel.check(call(ctypes.c_long(_ADD_RULE), ctypes.c_int(ruleset),
                                   ctypes.c_int(_PATH_BENEATH), ctypes.c_char_p(rule),
                                   ctypes.c_uint32(0)), "landlock_add_rule")
        kernel.check(call(ctypes.c_long(_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)),
                      "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _is_dir(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)
