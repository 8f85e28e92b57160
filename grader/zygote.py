"""A warm process that forks workers, so no worker pays for Python or `import torch`.

The zygote is started once per set of preloaded modules (say numpy and torch),
imports them, and then only forks. It creates no threads and runs no learner
code, so forking it is safe. Each fork becomes one worker (`grader.worker`):
the trusted side creates the worker's three pipes and passes their ends over a
Unix socket (SCM_RIGHTS), the zygote forks, and the child confines itself and
serves requests. The zygote also reaps its children and reports how each one
ended, since only a parent can.

Messages on the socket are JSON, one per SOCK_SEQPACKET packet.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

MAX_MESSAGE = 1 << 16


# -- the zygote process ------------------------------------------------------

def _serve_child(sock: socket.socket, fds: list[int], sandbox: dict) -> None:
    from grader import worker
    sock.close()
    os.setsid()
    req_r, rep_w, out_w = fds
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.close(out_w)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # Close everything else the zygote holds (its socket, the reaper's pipes):
    # learner code must not be able to ask for another uid to be reaped.
    low, high = sorted((req_r, rep_w))
    os.closerange(3, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, 1 << 16)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    worker.serve(req_r, rep_w, sandbox)


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


class _Reaper:
    """A small helper, forked before the zygote imports torch, that ends a uid's
    leftover processes. Forking it costs well under a millisecond, where forking
    a zygote that holds torch costs several."""

    def __init__(self):
        requests_r, self._requests = os.pipe()
        self._acks, acks_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._requests)
            os.close(self._acks)
            self._serve(requests_r, acks_w)
        os.close(requests_r)
        os.close(acks_w)

    @staticmethod
    def _serve(requests: int, acks: int) -> None:
        from grader import isolation
        try:
            while len(raw := os.read(requests, 4)) == 4:
                isolation.reap_uid(int.from_bytes(raw, "big"))
                os.write(acks, b"k")
        finally:
            os._exit(0)

    def reap(self, uid: int) -> None:
        os.write(self._requests, uid.to_bytes(4, "big"))
        os.read(self._acks, 1)


def _reap_all(live: dict, reaper: _Reaper) -> None:
    """The grader went away (it may have been killed): end every worker it left,
    and whatever those workers forked, so nothing keeps spinning."""
    for pid, uid in live.items():
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        if uid is not None:
            reaper.reap(uid)


def zygote_main() -> None:
    sock = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    reaper = _Reaper()
    init = json.loads(sock.recv(MAX_MESSAGE))
    for module in init.get("preload", []):
        __import__(module)
    import grader.worker  # noqa: F401 - imported once here, inherited by every fork
    sock.send(json.dumps({"ready": True}).encode())
    ended: dict[int, int] = {}
    live: dict[int, int | None] = {}  # pid -> uid of workers not yet waited for
    while True:
        data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 3)
        if not data:
            _reap_all(live, reaper)
            return
        message = json.loads(data)
        op = message.get("op")
        if op == "spawn" and len(fds) == 3:
            pid = os.fork()
            if pid == 0:
                try:
                    _serve_child(sock, fds, message["sandbox"])
                finally:
                    os._exit(0)
            for fd in fds:
                os.close(fd)
            live[pid] = message["sandbox"].get("uid")
            sock.send(json.dumps({"pid": pid}).encode())
        elif op == "wait":
            pid = int(message["pid"])
            live.pop(pid, None)
            if pid not in ended:
                try:
                    ended[pid] = _returncode(os.waitpid(pid, 0)[1])
                except ChildProcessError:
                    ended[pid] = 0
            if message.get("uid") is not None:
                reaper.reap(int(message["uid"]))
            sock.send(json.dumps({"returncode": ended.pop(pid)}).encode())
        else:
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"error": f"unknown op {op!r}"}).encode())


# -- the trusted side ----------------------------------------------------------

class ZygoteError(RuntimeError):
    pass


class Zygote:
    """The grader's handle on one zygote process."""

    def __init__(self, preload: tuple[str, ...], env: dict, start_timeout: float):
        self.preload = preload
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([sys.executable, "-I", "-m", "grader.zygote"], stdin=theirs,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=env, start_new_session=True, close_fds=True)
        theirs.close()
        self._sock.settimeout(start_timeout)
        self._send({"preload": list(preload)})
        self._ready = False  # its imports run while this process goes on; see _wait_ready

    def _wait_ready(self) -> None:
        if not self._ready:
            if self._receive().get("ready") is not True:
                raise ZygoteError("the zygote did not start")
            self._sock.settimeout(30)
            self._ready = True

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def spawn(self, fds: list[int], sandbox: dict) -> int:
        self._wait_ready()
        socket.send_fds(self._sock, [json.dumps({"op": "spawn", "sandbox": sandbox}).encode()], fds)
        return int(self._receive()["pid"])

    def wait(self, pid: int, uid: int | None) -> int:
        self._wait_ready()
        self._send({"op": "wait", "pid": pid, "uid": uid})
        return int(self._receive()["returncode"])

    def close(self) -> None:
        self._sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _send(self, message: dict) -> None:
        self._sock.send(json.dumps(message).encode())

    def _receive(self) -> dict:
        try:
            data = self._sock.recv(MAX_MESSAGE)
        except (socket.timeout, OSError) as exc:
            raise ZygoteError(f"the zygote stopped answering ({exc})") from None
        if not data:
            raise ZygoteError("the zygote exited")
        return json.loads(data)


if __name__ == "__main__":
    zygote_main()
