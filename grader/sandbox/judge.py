"""The judge's handle on one worker process: start it, talk to it, kill it.

A `Worker` is one learner process (see `grader.sandbox.worker`). Every request carries a
wall-clock deadline; a worker that misses it is killed with everything it
forked and the request raises `WorkerTimeout`. A worker that dies raises
`WorkerCrashed`. Its stdout and stderr go to one pipe that a thread drains, so
a learner who prints 100 MB cannot block the worker or fill the grader's
memory: only the first `output_cap` bytes are kept.

The three failures derive from BaseException so that a hidden check's
`except Exception` can never swallow them.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from grader import wire
from grader.config import GraderConfig
from grader.sandbox import launch
from grader.sandbox.uids import UidLease

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
    `deadline` (a time.monotonic() value) bounds every request, whatever its own
    timeout: a per-submission budget shared by all of a submission's workers.
    """

    def __init__(self, config: GraderConfig, preload: tuple[str, ...] = (),
                 deadline: float | None = None):
        self.config = config
        self.deadline = deadline
        self.workdir: str | None = None
        self._lease: UidLease | None = None
        self.returncode: int | None = None
        self._zygote = launch.zygote_for(tuple(preload), config)
        mode = self._zygote.mode if self._zygote is not None else "none"
        sandbox = self._sandbox(mode)
        req_r, self._req_w = _pipe()
        self._rep_r, rep_w = _pipe()
        out_r, out_w = os.pipe()
        self._output = _CappedOutput(out_r, config.output_cap)
        self._output.start()
        start = time.monotonic() + config.start_timeout
        try:
            if self._zygote is not None:
                self.pid = self._zygote.spawn([req_r, rep_w, out_w], sandbox)
                self._proc = None
            else:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "grader.sandbox.worker"], stdin=req_r, stdout=out_w,
                    stderr=out_w, pass_fds=(rep_w,), cwd=self.workdir, env=launch.WORKER_ENV,
                    start_new_session=True, close_fds=True)
                self.pid = self._proc.pid
        except launch.ZygoteError as exc:
            self._forget()
            raise WorkerCrashed(f"the grading sandbox failed ({exc})") from None
        finally:
            for fd in (req_r, rep_w, out_w):
                os.close(fd)
        if self._proc is not None:
            self._send({"reply_fd": rep_w, "preload": list(preload), "sandbox": sandbox}, start)
        if self._receive(start, "starting") != {"ready": True}:
            self.kill()
            raise WorkerCrashed("the grading worker did not start properly", self.output())

    def _sandbox(self, mode: str) -> dict:
        """What the zygote needs to confine this worker."""
        config = self.config
        limits = {"memory": config.memory_limit, "cpu_seconds": config.cpu_seconds,
                  "file_size": config.file_size, "core": 0}
        if mode in ("namespaces", "uid"):  # a process count of its own (own namespace or uid)
            limits["processes"] = config.processes
        sandbox = {"limits": limits, "tmp_size": config.tmp_size,
                   "argv": launch.kernel_argv(str(uuid.uuid4()))}
        if mode != "namespaces":  # namespaces bring a private /tmp; elsewhere, a folder
            self.workdir = sandbox["workdir"] = tempfile.mkdtemp(prefix="mp-worker-")
        if mode == "uid":
            self._lease = UidLease()
            sandbox["uid"] = self._lease.uid
            os.chown(self.workdir, self._lease.uid, self._lease.uid)
        return sandbox

    # -- public --------------------------------------------------------
    def request(self, message: dict, timeout: float, what: str):
        """Send one request and return the decoded reply (a dict)."""
        deadline = time.monotonic() + timeout
        if self.deadline is not None and self.deadline < deadline:
            deadline = self.deadline
        self._send(message, deadline)
        return self._receive(deadline, what)

    def output(self) -> str:
        return self._output.text()

    @property
    def alive(self) -> bool:
        return self.returncode is None

    def kill(self) -> None:
        """End the worker and everything it started; wipe its private folder."""
        if self.returncode is not None:
            return
        if self._proc is not None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
            self.returncode = self._proc.wait()
        else:
            try:
                self.returncode = self._zygote.end(self.pid)
            except launch.ZygoteError:  # the zygote is gone, and its workers with it
                self.returncode = -signal.SIGKILL
        for fd in (self._req_w, self._rep_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._output.join(timeout=2)
        self._forget()

    def _forget(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self._lease is not None:
            self._lease.release()
            self._lease = None

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
