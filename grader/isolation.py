"""Walls around a worker process, applied in the worker before learner code runs.

Three layers, each used where the platform allows it:

1. Resource limits (POSIX): address space, CPU time, file size, and process
   count, so a memory bomb gets MemoryError, a spin is killed, and a fork bomb
   stops at its quota.
2. A private mount namespace (Linux, as root): the hidden checks, the
   solutions, the project's tests and the submissions folder are covered with
   empty tmpfs mounts, so learner code cannot read them. Where the Python
   installation sits under a folder other users cannot enter (say /root), that
   folder is replaced by a tmpfs holding only the installation, so the
   unprivileged worker can still import the standard library.
3. A user of its own (as root): the worker switches to an unused uid, so it
   cannot signal the grader or other workers, cannot undo the mounts, and is
   held by its own process-count quota (root is exempt from RLIMIT_NPROC).

Elsewhere (not root, or not Linux) only layer 1 applies; `describe()` names the
layers in force, and every receipt records it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 2, 4, 4096, 8192, 16384, 1 << 18
UID_BASE = 61000  # workers run as UID_BASE + slot: uids no account on the machine uses
UID_SLOTS = 4000


def can_isolate() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "geteuid") and os.geteuid() == 0


def describe() -> str:
    return "rlimits+mount-namespace+own-uid" if can_isolate() else "rlimits"


def apply_limits(limits: dict) -> None:
    try:
        import resource
    except ImportError:  # not POSIX: the wall-clock kill in the parent still applies
        return
    names = {"memory": "RLIMIT_AS", "cpu_seconds": "RLIMIT_CPU",
             "file_size": "RLIMIT_FSIZE", "processes": "RLIMIT_NPROC"}
    for key, name in names.items():
        value = limits.get(key)
        if value is None or not hasattr(resource, name):
            continue
        limit = getattr(resource, name)
        _, hard = resource.getrlimit(limit)
        value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
        try:
            # CPU keeps a higher hard limit so the soft one ends in SIGXCPU, which
            # the parent reports as a timeout rather than an unexplained kill.
            resource.setrlimit(limit, (value, value + 5 if key == "cpu_seconds" else value))
        except (ValueError, OSError):
            pass


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mount(libc, source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    rc = libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                    ctypes.c_ulong(flags), data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _closed_ancestor(path: Path) -> Path | None:
    """The top-most folder above `path` that other users cannot enter, if any."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            return parent
    return None


def _open_python_installation(libc, workdir: str) -> None:
    """Let an unprivileged uid reach sys.base_prefix even under e.g. /root (mode 700)."""
    prefix = Path(sys.base_prefix).resolve()
    closed = _closed_ancestor(prefix)
    if closed is None:
        return
    keep = closed / prefix.relative_to(closed).parts[0]  # e.g. /root/.pyenv
    stage = Path(workdir) / ".python"
    stage.mkdir()
    _mount(libc, str(keep), str(stage), None, MS_BIND | MS_REC, None)
    _mount(libc, "tmpfs", str(closed), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    (closed / keep.name).mkdir()
    _mount(libc, str(stage), str(keep), None, MS_MOVE, None)
    stage.rmdir()


def enter(spec: dict) -> None:
    """Confine the current process; called in the worker before learner code runs.

    `spec`: workdir, limits, hidden (paths to cover), uid (or None).
    """
    workdir = spec["workdir"]
    uid = spec.get("uid")
    if uid is not None and can_isolate():
        libc = _libc()
        if libc.unshare(CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
        _mount(libc, "none", "/", None, MS_REC | MS_PRIVATE, None)
        for hidden in spec.get("hidden", []):
            if os.path.isdir(hidden) and not Path(workdir).is_relative_to(hidden):
                _mount(libc, "tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0000,size=4k")
        _open_python_installation(libc, workdir)
        os.chown(workdir, uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.chdir(workdir)
    os.environ["HOME"] = workdir
    if sys.platform.startswith("linux"):
        disguise_cmdline()
    apply_limits(spec.get("limits", {}))


def disguise_cmdline() -> None:
    """Make /proc/self/cmdline read `python3`, as a plain interpreter would.

    A forked worker inherits the zygote's command line, which names the grader;
    overwriting the argument area in place (as setproctitle does) removes that
    tell. Linux only; elsewhere, and on any surprise, it does nothing.
    """
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end
        name = b"python3\0"
        if end - start >= len(name):
            ctypes.memset(start, 0, end - start)
            ctypes.memmove(start, name, len(name))
    except (OSError, ValueError, IndexError):
        pass


class UidLease:
    """An unused worker uid, held with a file lock for as long as the worker lives.

    Separate grader processes on one machine (a batch pool, or two instructors)
    must never share a uid: a uid's leftovers are killed when its worker ends.
    The lock dies with its holder, so a killed grader frees its uids.
    """

    def __init__(self):
        import fcntl
        import tempfile
        folder = Path(tempfile.gettempdir()) / "mp-grader-uids"
        folder.mkdir(mode=0o700, exist_ok=True)
        start = os.getpid() % UID_SLOTS
        for i in range(UID_SLOTS):
            slot = (start + i) % UID_SLOTS
            fd = os.open(folder / str(slot), os.O_CREAT | os.O_RDWR, 0o600)
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
    """Kill every process left running as a worker's uid (fork-bomb leftovers).

    Runs in a throwaway child: kill(-1) from a process with that uid reaches all
    processes of that uid and nothing else.
    """
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            import signal
            for _ in range(3):
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    break
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
