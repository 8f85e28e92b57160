"""The trusted side of the worker process: start it, talk to it, kill it.

A `Worker` is one learner process (see `grader.worker`). Every request carries a
wall-clock deadline; a worker that misses it is killed with its whole process
group and the request raises `WorkerTimeout`. A worker that dies raises
`WorkerCrashed`. Its stdout and stderr go to one pipe that a thread drains, so
a learner who prints 100 MB cannot block the worker or fill the grader's
memory: only the first `output_cap` bytes are kept.

The three failures derive from BaseException so that a hidden check's
`except Exception` can never swallow them.
"""

from __future__ import annotations

import atexit
import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from grader import isolation, wire
from grader.config import GraderConfig
from grader.zygote import Zygote

HEADER = 8
MAX_REPLY = 16 * 2**20  # twice the largest honest reply (10^6 float64s, 8 MB; see grader.wire)


class WorkerFailure(BaseException):
    status = "crashed"

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.message = message
        self.output = output


class WorkerTimeout(WorkerFailure):
    status = "timeout"


class WorkerCrashed(WorkerFailure):
    status = "crashed"


class WorkerMemory(WorkerFailure):
    status = "memory"


class _CappedOutput(threading.Thread):
    """Drains a pipe, keeping the first `cap` bytes and counting the rest."""

    def __init__(self, fd: int, cap: int):
        super().__init__(daemon=True)
        self.fd, self.cap = fd, cap
        self.kept = bytearray()
        self.total = 0

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            self.total += len(chunk)
            if len(self.kept) < self.cap:
                self.kept += chunk[: self.cap - len(self.kept)]
        os.close(self.fd)

    def text(self) -> str:
        text = self.kept.decode("utf-8", "replace")
        if self.total > len(self.kept):
            text += f"\n… output cut: {self.total} bytes in all, {len(self.kept)} kept"
        return text


WORKER_ENV = {"PATH": os.defpath, "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
              # One thread each: workers run side by side, and a zygote with no
              # thread pools is safe to fork.
              "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_zygotes: dict[tuple[str, ...], Zygote] = {}


def prestart(preloads, config: GraderConfig) -> None:
    """Start the zygotes a batch will need, so their imports overlap other start-up work."""
    for preload in preloads:
        _zygote(tuple(preload), config)


def _zygote(preload: tuple[str, ...], config: GraderConfig) -> Zygote | None:
    if not config.use_zygote or not hasattr(os, "fork"):
        return None
    zygote = _zygotes.get(preload)
    if zygote is None or not zygote.alive:
        zygote = _zygotes[preload] = Zygote(preload, WORKER_ENV, config.start_timeout)
    return zygote


@atexit.register
def close_zygotes() -> None:
    for zygote in _zygotes.values():
        zygote.close()
    _zygotes.clear()


@functools.lru_cache(maxsize=8)
def hidden_paths(config: GraderConfig) -> tuple[str, ...]:
    """What learner code must not read: hidden checks, solutions, tests, submissions.
    Worked out once per configuration, not once per worker."""
    root = Path(config.course_root)
    paths = [Path(__file__).resolve().parent / "checks", root / "solutions", root / "tests",
             *map(Path, config.hidden_paths)]
    # Never cover the Python installation or the grader's own code: a worker still imports.
    needed = [Path(sys.prefix).resolve(), Path(__file__).resolve().parent]
    return tuple(sorted({str(p.resolve()) for p in paths if p.exists()
                         and not any(n == p.resolve() or n.is_relative_to(p.resolve()) for n in needed)}))


def _pipe() -> tuple[int, int]:
    """A pipe with a 1 MiB buffer where Linux allows it: a 10^6-float argument then
    crosses in a few wake-ups instead of hundreds."""
    r, w = os.pipe()
    if sys.platform.startswith("linux"):
        try:
            import fcntl
            fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ
        except OSError:
            pass
    return r, w


class Worker:
    """One sandboxed learner process, spoken to in framed plain-data messages.

    It is forked from a warm zygote where the platform has fork, else spawned.
    """

    def __init__(self, config: GraderConfig, preload: tuple[str, ...] = ()):
        self.config = config
        self.workdir = tempfile.mkdtemp()
        self._lease = isolation.UidLease() if config.isolate and isolation.can_isolate() else None
        self.uid = self._lease.uid if self._lease else None
        sandbox = {"workdir": self.workdir, "uid": self.uid, "hidden": list(hidden_paths(config)),
                   "limits": {"memory": config.memory_limit, "cpu_seconds": config.cpu_seconds,
                              "file_size": config.file_size,
                              "processes": config.processes if self.uid is not None else None}}
        req_r, self._req_w = _pipe()
        self._rep_r, rep_w = _pipe()
        out_r, out_w = os.pipe()
        self._output = _CappedOutput(out_r, config.output_cap)
        self._output.start()
        self._zygote = _zygote(tuple(preload), config)
        self.returncode: int | None = None
        deadline = time.monotonic() + config.start_timeout
        if self._zygote is not None:
            self.pid = self._zygote.spawn([req_r, rep_w, out_w], sandbox)
            self._proc = None
        else:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "grader.worker"], stdin=req_r, stdout=out_w,
                stderr=out_w, pass_fds=(rep_w,), cwd=self.workdir, env=WORKER_ENV,
                start_new_session=True, close_fds=True)
            self.pid = self._proc.pid
        for fd in (req_r, rep_w, out_w):
            os.close(fd)
        if self._proc is not None:
            self._send({"reply_fd": rep_w, "preload": list(preload), "sandbox": sandbox}, deadline)
        if self._receive(deadline, "starting") != {"ready": True}:
            self.kill()
            raise WorkerCrashed("the grading worker did not start properly")

    # -- public --------------------------------------------------------
    def request(self, message: dict, timeout: float, what: str):
        """Send one request and return the decoded reply (a dict)."""
        deadline = time.monotonic() + timeout
        self._send(message, deadline)
        return self._receive(deadline, what)

    def output(self) -> str:
        return self._output.text()

    @property
    def alive(self) -> bool:
        return self.returncode is None

    def kill(self) -> None:
        if self.returncode is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._proc is not None:
            self.returncode = self._proc.wait()
        else:
            self.returncode = self._zygote.wait(self.pid, self.uid)
        for fd in (self._req_w, self._rep_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._output.join(timeout=2)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._lease is not None:
            self._lease.release()

    close = kill

    # -- framing -------------------------------------------------------
    def _send(self, message: dict, deadline: float) -> None:
        payload = wire.dumps(message)
        view = memoryview(len(payload).to_bytes(HEADER, "big") + payload)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(WorkerTimeout, "sending it the inputs")
            _, writable, _ = select.select([], [self._req_w], [], left)
            if not writable:
                continue
            try:
                view = view[os.write(self._req_w, view[: 1 << 20]):]
            except BrokenPipeError:
                self._fail(WorkerCrashed, "sending it the inputs")

    def _receive(self, deadline: float, what: str):
        header = self._read_exact(HEADER, deadline, what)
        size = int.from_bytes(header, "big")
        if size > MAX_REPLY:
            self.kill()
            raise WorkerCrashed(f"the reply while {what} was too large ({size} bytes)")
        try:
            return wire.loads(self._read_exact(size, deadline, what))
        except wire.WireError as exc:
            self.kill()
            raise WorkerCrashed(f"the reply while {what} was not plain data ({exc})") from None

    def _read_exact(self, n: int, deadline: float, what: str) -> bytes:
        chunks, left = [], n
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(WorkerTimeout, what)
            readable, _, _ = select.select([self._rep_r], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(self._rep_r, min(left, 1 << 20))
            if not chunk:
                self._fail(WorkerCrashed, what)
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _fail(self, kind: type[WorkerFailure], what: str):
        timed_out = kind is WorkerTimeout
        self.kill()
        code = self.returncode
        if timed_out:
            raise WorkerTimeout(f"it did not finish within the time limit while {what}",
                                self.output())
        if code is not None and code < 0 and -code == getattr(signal, "SIGXCPU", -1):
            raise WorkerTimeout(f"it used up its CPU-time limit while {what}", self.output())
        if code is not None and code < 0 and -code == signal.SIGKILL:
            raise WorkerMemory(f"the process was killed (most likely for memory) while {what}",
                               self.output())
        exit_text = f"exit code {code}" if code is not None and code >= 0 else f"signal {-code}"
        raise WorkerCrashed(f"the process ended ({exit_text}) while {what}", self.output())
