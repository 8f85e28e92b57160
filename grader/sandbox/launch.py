"""Choosing the walls and starting zygotes: the judge's side of `grader.sandbox.zygote`.

Walls are tried strongest first, once per grading process; a zygote that
cannot raise them says why, and the next kind is tried:

    namespaces  Linux that allows unprivileged user namespaces, as root or not
    uid         root where namespaces are refused (a container without
                CAP_SYS_ADMIN): an unused uid per worker, plus Landlock where
                the kernel has it, else only file permissions hide the course
    landlock    an ordinary user where namespaces are refused: Landlock
    none        rlimits only: macOS, Windows, or `--no-sandbox`

`describe()` names the walls in force; every receipt records it.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass, field

from grader.config import GraderConfig
from grader.sandbox import allowlist, kernel, landlock, seccomp
from grader.sandbox.uids import UidLease

MAX_MESSAGE = 1 << 16
# One thread each: workers run side by side, and a zygote with no thread pools is safe to fork.
WORKER_ENV = {"PATH": os.defpath, "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
              "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# A worker's command line, as a Jupyter kernel's reads (see walls.disguise).
RUNTIME = "/tmp/.local/share/jupyter/runtime/"


def kernel_argv(kernel_id: str) -> list[str]:
    return ["-m", "ipykernel_launcher", "-f", f"{RUNTIME}kernel-{kernel_id}.json"]


def _zygote_argv() -> list[str]:
    """The zygote's command line, padded to exactly the length of a worker's, so
    that overwriting it in place leaves no trailing bytes."""
    argv = [sys.executable, "-m", "grader.sandbox.zygote", str(os.getpid())]
    wanted = sum(len(a) + 1 for a in [sys.executable, *kernel_argv("0" * 36)])
    return argv + [" " * (wanted - sum(len(a) + 1 for a in argv) - 1)]


class ZygoteError(RuntimeError):
    pass


class ZygoteRefused(ZygoteError):
    """The zygote could not raise these walls here; weaker ones may work."""


@dataclass
class Walls:
    """The walls around workers in this process, and why stronger ones were not used."""

    mode: str
    walls: tuple[str, ...]
    refused: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return "+".join(self.walls)

    @property
    def holds_for_a_class(self) -> bool:
        """Hidden files unreadable, nothing reachable outside, a process cap."""
        return self.mode == "namespaces" or (self.mode == "uid" and any(
            w.startswith("landlock") or w == "file-permissions" for w in self.walls))

    def missing(self) -> str:
        if self.mode == "namespaces":
            return ""
        if not sys.platform.startswith("linux"):
            return f"{platform.system()} has no user namespaces or Landlock"
        return "; ".join(self.refused) or "the sandbox was turned off (--no-sandbox)"

    def sentence(self) -> str:
        text = {"namespaces": "filesystem allowlist, own PID, network and IPC namespaces, no "
                              "capabilities, process cap, private /tmp",
                "uid": "own uid per worker, " + ("Landlock filesystem allowlist"
                                                 if any(w.startswith("landlock") for w in self.walls)
                                                 else "file permissions"),
                "landlock": "Landlock filesystem allowlist only (no process cap)",
                "none": "none (rlimits only)"}[self.mode]
        return f"walls: {text} [{self.describe()}]"


def _walls(mode: str) -> tuple[str, ...]:
    filtered = ("seccomp",) if seccomp.program([]) is not None else ()
    abi = landlock.abi() if mode in ("uid", "landlock") else 0
    fences = (f"landlock-abi{abi}",) + (("no-tcp",) if abi >= 4 else ()) + (
        ("scoped-signals",) if abi >= 6 else ()) if abi else ()
    return {"namespaces": ("allowlist-root", "pid-ns", "net-ns", "ipc-ns", "user-ns", "no-caps",
                           "private-tmp") + filtered + ("rlimits", "nproc"),
            "uid": ("own-uid",) + (fences or ("file-permissions",)) + filtered + ("rlimits", "nproc"),
            "landlock": fences + filtered + ("rlimits",),
            "none": ("rlimits",)}[mode]


def candidates(config: GraderConfig) -> list[str]:
    if not config.isolate or not sys.platform.startswith("linux"):
        return ["none"]
    modes = ["namespaces", "uid", "landlock", "none"] if os.geteuid() == 0 else [
        "namespaces", "landlock", "none"]
    if "uid" in modes and "uid" not in _refused and not allowlist.open_to_others(sys.base_prefix):
        _refused["uid"] = (f"uid: the Python installation ({sys.base_prefix}) is closed to other "
                           f"users, so a worker under its own uid could not import from it")
    return [m for m in modes if m != "landlock" or landlock.abi()]


class ZygoteHandle:
    """The judge's handle on one zygote process."""

    def __init__(self, preload: tuple[str, ...], mode: str, config: GraderConfig):
        self.preload, self.mode = preload, mode
        self._lease = UidLease() if mode == "namespaces" and os.geteuid() == 0 else None
        setup = {"mode": mode, "preload": list(preload), "landlock_abi": landlock.abi()
                 if mode in ("uid", "landlock") else 0,
                 "worker_uid": self._lease.uid if self._lease else None}
        if mode != "none":  # the zygote works out the allowlist for the grader it imports
            setup["course_root"] = str(config.course_root)
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Started from this thread: the zygote dies with it (PR_SET_PDEATHSIG).
        self.proc = subprocess.Popen(
            _zygote_argv(), stdin=theirs,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=WORKER_ENV, cwd="/",
            start_new_session=True, close_fds=True)
        theirs.close()
        self._sock.settimeout(config.start_timeout)
        self._send(setup)
        self._ready = False  # its imports run while this process goes on; see wait_ready

    def wait_ready(self) -> None:
        if not self._ready:
            reply = self._receive()
            if "error" in reply:
                self.close()
                raise ZygoteRefused(str(reply["error"]))
            if reply.get("ready") is not True:
                raise ZygoteError("the zygote did not start")
            self._sock.settimeout(30)
            self._ready = True

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def spawn(self, fds: list[int], sandbox: dict) -> int:
        self.wait_ready()
        socket.send_fds(self._sock, [json.dumps({"op": "spawn", "sandbox": sandbox}).encode()], fds)
        return int(self._receive()["pid"])

    def end(self, pid: int) -> int:
        """Kill a worker with all it forked; its return code."""
        self._send({"op": "end", "pid": pid})
        return int(self._receive()["returncode"])

    def close(self) -> None:
        self._sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def _send(self, message: dict) -> None:
        try:
            self._sock.send(json.dumps(message).encode())
        except OSError as exc:
            raise ZygoteError(f"the zygote stopped answering ({exc})") from None

    def _receive(self) -> dict:
        try:
            data = self._sock.recv(MAX_MESSAGE)
        except (socket.timeout, OSError) as exc:
            raise ZygoteError(f"the zygote stopped answering ({exc})") from None
        if not data:
            raise ZygoteError("the zygote exited")
        return json.loads(data)


_zygotes: dict[tuple[tuple[str, ...], str], ZygoteHandle] = {}
_refused: dict[str, str] = {}  # mode -> why it failed in this process
_in_force: dict[bool, Walls] = {}


def _mode(config: GraderConfig) -> str:
    return next(m for m in candidates(config) if m not in _refused or m == "none")


def prestart(preloads, config: GraderConfig) -> None:
    """Start the zygotes a batch will need, so their imports overlap other start-up work."""
    if config.use_zygote and hasattr(os, "fork"):
        for preload in preloads:
            _handle(tuple(preload), _mode(config), config)


def _handle(preload: tuple[str, ...], mode: str, config: GraderConfig) -> ZygoteHandle:
    zygote = _zygotes.get((preload, mode))
    if zygote is None or not zygote.alive:
        zygote = _zygotes[(preload, mode)] = ZygoteHandle(preload, mode, config)
    return zygote


def zygote_for(preload: tuple[str, ...], config: GraderConfig) -> ZygoteHandle | None:
    """A ready zygote behind the strongest walls this machine allows (None: spawn)."""
    if not config.use_zygote or not hasattr(os, "fork"):
        return None
    while True:
        mode = _mode(config)
        zygote = _handle(preload, mode, config)
        try:
            zygote.wait_ready()
        except ZygoteRefused as exc:
            del _zygotes[(preload, mode)]
            if mode == "none":
                raise ZygoteError(str(exc)) from None
            _refused[mode] = f"{mode}: {exc}"
            continue
        _settled(mode, config)
        return zygote


def _settled(mode: str, config: GraderConfig) -> None:
    if config.isolate not in _in_force or _in_force[config.isolate].mode != mode:
        _in_force[config.isolate] = Walls(mode, _walls(mode), list(_refused.values()))
        if mode in ("landlock", "none") and sys.platform.startswith("linux"):
            # Workers share this process's uid: no ptrace of it, no reading its memory.
            kernel.prctl(kernel.PR_SET_DUMPABLE, 0)


def in_force(config: GraderConfig | None = None) -> Walls:
    """The walls workers get in this process; starts a zygote to find out if none has."""
    config = config or GraderConfig()
    if config.isolate not in _in_force:
        if config.use_zygote and hasattr(os, "fork"):
            zygote_for((), config)
        else:
            _in_force[config.isolate] = Walls("none", ("rlimits",), [])
    return _in_force[config.isolate]


def refusal(config: GraderConfig, private=()) -> str | None:
    """Why a class must not be graded here, or None. `private`: folders learner
    code must not read besides the course's own (submissions, output)."""
    found = in_force(config)
    if found.holds_for_a_class:
        readable = [] if found.mode != "uid" or "file-permissions" not in found.walls else [
            str(p) for p in allowlist.private_paths(config.course_root, private)
            if allowlist.readable_by_others(p)]
        if not readable:
            return None
        return (f"workers can only run under their own uid here ({found.missing()}), and other "
                f"users can read {', '.join(readable)}: make them private (chmod -R o= PATH), "
                f"or pass --no-sandbox to grade without walls")
    return (f"no sandbox for learner code here ({found.missing()}): learner code could read the "
            f"hidden checks, other submissions and the results. Grade on Linux with user "
            f"namespaces (see README, \"What holds where\"), or pass --no-sandbox to grade anyway")


def describe(isolate: bool = True) -> str:
    """The walls in force, for a receipt."""
    found = _in_force.get(isolate)
    return found.describe() if found else in_force(GraderConfig(isolate=isolate)).describe()


@atexit.register
def close_zygotes() -> None:
    for zygote in _zygotes.values():
        zygote.close()
    _zygotes.clear()
