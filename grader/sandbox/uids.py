"""Worker uids, for a grader running as root.

Inside its user namespace a worker is uid 1000; outside it runs as a uid no
account uses, so that the kernel's per-user process cap applies to it (root is
exempt from RLIMIT_NPROC) and, where namespaces are not allowed (a container),
so that file permissions and a per-uid sweep keep it in.

The range 60600-61099 sits in the gap systemd documents as unused
(60578-61183): above login users (<= 60000) and systemd-homed (60001-60513),
below DynamicUser (61184-65519), and far below the ranges /etc/subuid hands to
rootless containers (100000 and up), whose processes a sweep must never touch.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

UID_BASE = 60600
UID_SLOTS = 500


class UidLease:
    """An unused worker uid, held with a file lock for as long as its holder lives.

    Separate grader processes on one machine (a batch pool, or two instructors)
    must never share a uid. The lock dies with its holder, so a killed grader
    frees its uids; the next holder sweeps the uid before using it.
    """

    def __init__(self):
        import fcntl
        folder = Path(tempfile.gettempdir()) / "mp-grader-uids"
        folder.mkdir(mode=0o700, exist_ok=True)
        start = os.getpid() % UID_SLOTS
        for i in range(UID_SLOTS):
            slot = (start + i) % UID_SLOTS
            fd = os.open(folder / str(slot), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._fd, self.uid = fd, UID_BASE + slot
            return
        raise RuntimeError("no free worker uid")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def reap_uid(uid: int) -> None:
    """Kill every process running as a worker uid (what a worker left behind).

    Runs in a throwaway child: kill(-1) from a process with that uid reaches all
    processes of that uid and nothing else.
    """
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            for _ in range(3):
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    break
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
