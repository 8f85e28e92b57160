"""Raising the walls: once in the zygote, then in each worker before learner code runs.

Namespace walls (Linux with unprivileged user namespaces; as root or not):

- the zygote, root of its own user namespace and PID 1 of its own PID
  namespace, builds a root filesystem on an empty tmpfs from the allowlist
  (`grader.sandbox.allowlist`), all read-only, and pivots into it: what is not
  on the list does not exist, so there is nothing to uncover;
- each worker then gets its own PID namespace (it is PID 1: when it ends, the
  kernel kills everything it forked), its own mount and IPC namespaces with a
  fresh /proc and private size-limited /tmp and /dev/shm, and finally a user
  namespace of its own in which it is uid 1000 with no capabilities, so it can
  neither undo a mount nor count another worker's processes as its own;
- the network namespace (loopback only, down) is the zygote's.

Fallback walls, where namespaces are refused (`enter_fallback`): a private
folder, Landlock over the same allowlist where the kernel has it, an uid of
its own where the grader is root, and the same rlimits and seccomp filter.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys

from grader.sandbox import kernel, landlock, seccomp
from grader.sandbox.kernel import (MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID,
                                   MS_PRIVATE, MS_REC)
from grader.sandbox.limits import apply_limits

INSIDE_UID = 1000
DEVICES = ("null", "zero", "full", "random", "urandom")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2"}
PASSWD = "root:x:0:0:root:/root:/bin/sh\nlearner:x:1000:1000:learner:/tmp:/bin/sh\n"
GROUP = "root:x:0:\nlearner:x:1000:\n"
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _AT_RECURSIVE = 1, 2, 0x8000


# -- the zygote -------------------------------------------------------------------

def build_root(plan: dict) -> None:
    """Pivot into a read-only root holding only the allowlist (namespace walls)."""
    kernel.mount(None, "/", None, MS_REC | MS_PRIVATE)
    new = next(p for p in ("/tmp", "/mnt", "/var/tmp", "/dev") if os.path.isdir(p))
    # Opened before the staging tmpfs covers `new`: a course, or its venv, may live below it.
    devices = [f"/dev/{name}" for name in DEVICES if os.path.exists(f"/dev/{name}")]
    sources = {path: os.open(path, os.O_PATH | os.O_CLOEXEC)
               for path in dict.fromkeys([*plan["read"], *plan["modules"], *devices])}
    kernel.mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path in plan["read"]:
        _bind(sources[path], new + path)
    for link, target in plan["links"]:
        os.makedirs(os.path.dirname(new + link), exist_ok=True)
        os.symlink(target, new + link)
    for folder in plan["hide"]:
        kernel.mount("tmpfs", new + folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
    for path in plan["modules"]:
        _bind(sources[path], new + path)
    _etc(new)
    _dev(new, {path: sources[path] for path in devices})
    for fd in sources.values():
        os.close(fd)
    os.mkdir(new + "/proc")
    kernel.mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(new + "/tmp", exist_ok=True)  # each worker mounts its own /tmp here
    os.chdir(new)
    kernel.pivot_root(".", ".")  # the old root now sits under the new one...
    kernel.umount(".", MNT_DETACH)  # ...and is gone
    os.chdir("/")
    _read_only("/")


def _bind(source: int, target: str) -> None:
    """Bind what the O_PATH descriptor `source` names at `target`."""
    if stat.S_ISDIR(os.fstat(source).st_mode):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "w").close()
    kernel.mount(f"/proc/self/fd/{source}", target, None, MS_BIND | MS_REC)


def _read_only(path: str) -> None:
    """Make every mount at or below `path` read-only and nosuid: one
    mount_setattr (Linux 5.12+), else a remount of each one in turn."""
    attr = (ctypes.c_uint64 * 4)(_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID, 0, 0, 0)
    rc = kernel.libc().syscall(ctypes.c_long(442), ctypes.c_int(-100), path.encode(),
                               ctypes.c_uint(_AT_RECURSIVE), attr, ctypes.c_size_t(32))
    if rc != 0:
        for target in mount_points(path):
            remount_read_only(target)


def mount_points(below: str) -> list[str]:
    """Mount points at or below `below`, outermost first (from /proc/self/mountinfo)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return [p for p in points if p == below or p.startswith(below.rstrip("/") + "/")]


# statvfs flag -> mount flag, for the flags a remount inside a user namespace must keep
_KEPT = {2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: 1024, 2048: 2048, 4096: 1 << 21}


def remount_read_only(target: str) -> None:
    """Remount one bind read-only. Flags the mount was given outside (nodev,
    noatime...) are locked inside a user namespace and must be repeated."""
    found = os.statvfs(target).f_flag
    flags = sum(mount for stat, mount in _KEPT.items() if found & stat)
    if not found & (1024 | 4096):
        flags |= 1 << 24  # MS_STRICTATIME: the mount had neither noatime nor relatime
    kernel.mount(None, target, None, MS_BIND | kernel.MS_REMOUNT | kernel.MS_RDONLY | MS_NOSUID | flags)


def _etc(root: str) -> None:
    os.makedirs(root + "/etc", exist_ok=True)
    for name, text in (("passwd", PASSWD), ("group", GROUP)):
        with open(f"{root}/etc/{name}", "w") as f:
            f.write(text)


def _dev(root: str, devices: dict[str, int]) -> None:
    os.mkdir(root + "/dev")
    kernel.mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID, "mode=0755,size=64k")
    for path, fd in devices.items():
        _bind(fd, root + path)
    for name, target in DEV_LINKS.items():
        os.symlink(target, f"{root}/dev/{name}")
    os.mkdir(root + "/dev/shm", 0o1777)


# -- each worker -------------------------------------------------------------------

def binds_below_tmp() -> list[str]:
    """The outermost allowlisted binds below /tmp in the zygote's root (a course, or
    its venv, that lives under /tmp); usually none. Found once, not per worker."""
    below = [p for p in mount_points("/tmp") if p != "/tmp"]
    return [p for p in below if not any(p.startswith(q + "/") for q in below)]


def enter_namespaces(spec: dict, root_mode: bool, below_tmp: list[str]) -> None:
    """Confine a freshly forked worker, already PID 1 of its own PID namespace.
    `below_tmp` (from binds_below_tmp) is put back on top of its private /tmp,
    read-only as before, or imports from a course under /tmp would fail."""
    kernel.unshare(kernel.CLONE_NEWNS | kernel.CLONE_NEWIPC)
    size = int(spec.get("tmp_size", 64 * 2**20))
    kept = [(p, os.open(p, os.O_PATH | os.O_CLOEXEC)) for p in below_tmp]
    kernel.mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={size}")
    for path, fd in kept:
        _bind(fd, path)
        os.close(fd)
        _read_only(path)
    kernel.mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={size}")
    kernel.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if root_mode:  # outside, uid 1000 of the zygote's namespace is an unused uid, not root
        os.setgroups([])
        os.setresgid(INSIDE_UID, INSIDE_UID, INSIDE_UID)
        os.setresuid(INSIDE_UID, INSIDE_UID, INSIDE_UID)
        kernel.prctl(kernel.PR_SET_DUMPABLE, 1)  # the uid change cleared it; /proc/self needs it
    uid, gid = os.getuid(), os.getgid()
    kernel.unshare(kernel.CLONE_NEWUSER)
    kernel.write_text("/proc/self/setgroups", "deny")
    kernel.write_text("/proc/self/uid_map", f"{INSIDE_UID} {uid} 1\n")
    kernel.write_text("/proc/self/gid_map", f"{INSIDE_UID} {gid} 1\n")
    settle("/tmp", spec)
    kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
    kernel.drop_capabilities()
    seccomp.install(seccomp.WORKER_RULES)


def enter_fallback(spec: dict, rule_fds: list[int], landlock_abi: int) -> None:
    """Confine a worker where namespaces are refused: its own folder, Landlock
    over the allowlist where the kernel has it, its own uid where given."""
    workdir = spec["workdir"]
    settle(workdir, spec)
    kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
    if rule_fds and landlock_abi:
        own = landlock.open_paths([workdir, *(f"/dev/{d}" for d in DEVICES)])
        landlock.restrict(rule_fds, own, landlock_abi)
    uid = spec.get("uid")
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    seccomp.install(seccomp.WORKER_RULES)


def settle(home: str, spec: dict) -> None:
    """The worker's folder, budgets and looks: the same in every mode."""
    os.chdir(home)
    os.environ["HOME"] = home
    if home != "/tmp":
        os.environ["TMPDIR"] = home
    try:  # the kernel's OOM killer takes learner processes first
        kernel.write_text("/proc/self/oom_score_adj", "1000")
    except OSError:
        pass
    disguise(spec.get("argv"))
    apply_limits(spec.get("limits", {}))


def disguise(argv: list[str] | None) -> None:
    """Look like a Jupyter kernel: sys.argv, sys.orig_argv and /proc/self/cmdline.

    `argv` is what follows the interpreter, e.g. ["-m", "ipykernel_launcher",
    "-f", ".../kernel-<id>.json"]. A forked worker inherits the zygote's command
    line, which names the grader; overwriting the argument area in place (as
    setproctitle does) removes that tell. The judge pads the zygote's command
    line so that the new one fits.
    """
    if not argv:
        return
    import sysconfig
    sys.orig_argv[:] = [sys.executable, *argv]
    sys.argv[:] = [os.path.join(sysconfig.get_paths()["purelib"], f"{argv[1]}.py"), *argv[2:]]
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end
        raw = b"\0".join(a.encode() for a in sys.orig_argv) + b"\0"
        if end - start >= len(raw):
            ctypes.memset(start, 0, end - start)
            ctypes.memmove(start, raw, len(raw))
    except (OSError, ValueError, IndexError):
        pass
