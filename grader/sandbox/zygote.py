"""The zygote: a warm process that forks one worker per exercise.

It is started once per set of preloaded modules (say numpy and torch),
imports them, and then only forks, so no worker pays for Python or `import
torch`. It runs no learner code. With namespace walls the processes are:

    judge ── launcher ── zygote (PID 1 of the sandbox) ── worker (PID 1 of its own) ── learner forks

The launcher, a small Python with nothing imported yet, enters new user,
mount, network, IPC and PID namespaces (a helper it forks first writes the uid
map from outside) and forks the zygote, which builds the allowlisted root
(`grader.sandbox.walls`), imports the preloads from it, and serves. Each
process dies with its parent (PR_SET_PDEATHSIG), and when the zygote, PID 1
of the sandbox, dies, the kernel kills every worker and everything they forked.
So a grader killed with `kill -9` leaves nothing running.

Protocol: JSON packets on a SOCK_SEQPACKET Unix socket. The judge sends the
setup, then `spawn` orders carrying a worker's three pipe ends (SCM_RIGHTS)
and `end` orders; the zygote answers `ready` or `error` (why it could not
raise the walls asked for), then one pid or one return code per order.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import traceback

from grader.sandbox import kernel, walls
from grader.sandbox.uids import reap_uid

MAX_MESSAGE = 1 << 16
NAMESPACES = (kernel.CLONE_NEWUSER | kernel.CLONE_NEWNS | kernel.CLONE_NEWNET
              | kernel.CLONE_NEWIPC | kernel.CLONE_NEWPID)


# -- the launcher ------------------------------------------------------------------

def main() -> None:
    parent = int(sys.argv[1])
    if sys.platform.startswith("linux"):
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the judge died before the line above
        os._exit(1)
    sock = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    setup = json.loads(sock.recv(MAX_MESSAGE))
    if "course_root" in setup:
        from grader.sandbox import allowlist
        try:
            setup["plan"] = allowlist.plan(setup["course_root"])
        except allowlist.AllowlistError as exc:
            _refuse(sock, str(exc))
    if setup["mode"] == "namespaces":
        try:
            _enter_namespaces(setup.get("worker_uid"))
        except OSError as exc:
            _refuse(sock, f"user namespaces are not allowed here ({exc})")
        pid = os.fork()
        if pid:
            sock.close()
            _, status = os.waitpid(pid, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)  # the zygote dies with the launcher
        try:
            walls.build_root(setup["plan"])
        except Exception as exc:  # noqa: BLE001 - any failure here means: weaker walls
            _refuse(sock, f"the sandbox's filesystem could not be built ({exc})")
    if sys.platform.startswith("linux"):
        # No same-uid ptrace or /proc/<pid>/mem of the zygote. Not before the uid map
        # is written: that needs the launcher's /proc files to be its own.
        kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
    Zygote(sock, setup).serve()


def _refuse(sock: socket.socket, why: str) -> None:
    sock.send(json.dumps({"error": why}).encode())
    os._exit(1)


def _enter_namespaces(worker_uid: int | None) -> None:
    """Enter new namespaces; a helper forked beforehand writes the uid map from
    outside, since only the parent namespace may map more than one's own uid."""
    uid, gid = os.geteuid(), os.getegid()
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        try:
            os.close(go_w)
            os.close(done_r)
            if os.read(go_r, 1) == b"g":
                _write_maps(os.getppid(), uid, gid, worker_uid)
                os.write(done_w, b"k")
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(done_w)
    try:
        kernel.unshare(NAMESPACES)
        os.write(go_w, b"g")
        mapped = os.read(done_r, 1) == b"k"
    finally:
        os.close(go_w)
        os.close(done_r)
        os.waitpid(helper, 0)
    if not mapped:
        raise OSError(1, "the uid map could not be written")


def _write_maps(pid: int, uid: int, gid: int, worker_uid: int | None) -> None:
    if uid == 0:  # root: keep root for the zygote, and give workers an unused uid outside
        ids = f"0 0 1\n{walls.INSIDE_UID} {worker_uid} 1\n"
        kernel.write_text(f"/proc/{pid}/uid_map", ids)
        kernel.write_text(f"/proc/{pid}/gid_map", ids)
    else:
        kernel.write_text(f"/proc/{pid}/setgroups", "deny")
        kernel.write_text(f"/proc/{pid}/uid_map", f"0 {uid} 1\n")
        kernel.write_text(f"/proc/{pid}/gid_map", f"0 {gid} 1\n")


# -- the zygote ------------------------------------------------------------------

class _Reaper:
    """Own-uid mode only: a small helper, forked before the zygote imports torch,
    that kills a uid's leftover processes (forking it costs well under a
    millisecond, forking the zygote several). If the zygote dies it still ends
    every uid it was told of."""

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
        known = set()
        try:
            while len(raw := os.read(requests, 5)) == 5:
                uid = int.from_bytes(raw[1:], "big")
                known.add(uid)
                if raw[:1] == b"r":
                    reap_uid(uid)
                    os.write(acks, b"k")
            for uid in known:
                reap_uid(uid)
        finally:
            os._exit(0)

    def reap(self, uid: int) -> None:
        os.write(self._requests, b"r" + uid.to_bytes(4, "big"))
        os.read(self._acks, 1)


class Zygote:
    def __init__(self, sock: socket.socket, setup: dict):
        self.sock, self.mode = sock, setup["mode"]
        self.root_mode = setup.get("worker_uid") is not None  # real root outside, not just here
        self.reaper = _Reaper() if self.mode == "uid" else None
        self.live: dict[int, int | None] = {}  # pid -> uid of workers not yet ended
        self.rule_fds: list[int] = []
        self.landlock_abi = int(setup.get("landlock_abi", 0))
        if self.mode in ("uid", "landlock") and sys.platform.startswith("linux"):
            # Orphans of a worker's forks come back here, to be swept when it ends.
            kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 1)
        try:
            for module in setup.get("preload", []):
                __import__(module)
            from grader.sandbox import worker
        except Exception as exc:  # noqa: BLE001 - say why, instead of dying silently
            _refuse(sock, f"importing the preloaded modules inside the sandbox failed "
                          f"({type(exc).__name__}: {exc})")
        self.worker = worker
        if self.mode == "namespaces":
            self.pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            self.below_tmp = walls.binds_below_tmp()
        elif self.landlock_abi:
            from grader.sandbox import landlock
            plan = setup["plan"]
            self.rule_fds = landlock.open_paths(plan["read"] + plan["modules"]
                                                + plan["proc"])

    def serve(self) -> None:
        self.sock.send(json.dumps({"ready": True}).encode())
        while True:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 3)
            if not data:
                self._end_all()
                return
            message = json.loads(data)
            op = message.get("op")
            if op == "spawn" and len(fds) == 3:
                reply = {"pid": self._spawn(fds, message["sandbox"])}
            elif op == "end":
                reply = {"returncode": self._end(int(message["pid"]))}
            else:
                reply = {"error": f"unknown op {op!r}"}
            for fd in fds:
                os.close(fd)
            self.sock.send(json.dumps(reply).encode())

    def _spawn(self, fds: list[int], spec: dict) -> int:
        uid = spec.get("uid")
        if self.reaper is not None and uid is not None:
            self.reaper.reap(uid)  # whatever a dead grader left under this uid; and remember it
        if self.mode == "namespaces":
            kernel.unshare(kernel.CLONE_NEWPID)  # the next child is PID 1 of a new namespace
        pid = -1
        try:
            pid = os.fork()
        finally:
            if self.mode == "namespaces" and pid != 0:
                kernel.setns(self.pid_ns, kernel.CLONE_NEWPID)  # later children: back to ours
        if pid == 0:
            try:
                self._become_worker(fds, spec)
            finally:
                os._exit(0)
        self.live[pid] = uid
        return pid

    def _become_worker(self, fds: list[int], spec: dict) -> None:
        self.sock.close()
        if sys.platform.startswith("linux"):
            kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
            kernel.prctl(kernel.PR_SET_DUMPABLE, 1)  # an ordinary process; /proc/self is its own
        os.setsid()
        req_r, rep_w, out_w = fds
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        try:
            if self.mode == "namespaces":
                walls.enter_namespaces(spec, self.root_mode, self.below_tmp)
            elif self.mode in ("uid", "landlock"):
                walls.enter_fallback(spec, self.rule_fds, self.landlock_abi)
            else:
                walls.settle(spec["workdir"], spec)
        except BaseException:  # the judge shows this output: it is ours, not the learner's
            traceback.print_exc()
            os._exit(70)
        # Learner code keeps only its two pipes: no socket to the zygote (it
        # could order spawns), no reaper pipe, no Landlock rule descriptors.
        keep = sorted((req_r, rep_w))
        os.closerange(3, keep[0])
        os.closerange(keep[0] + 1, keep[1])
        os.closerange(keep[1] + 1, 1 << 16)
        self.worker.serve(req_r, rep_w)

    def _end(self, pid: int) -> int:
        """Kill a worker and all it forked, and say how it ended."""
        uid = self.live.pop(pid, None)
        try:
            # PID 1 of its namespace: its death takes the namespace with it.
            os.kill(pid, signal.SIGKILL) if self.mode == "namespaces" else os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            status = os.waitpid(pid, 0)[1]
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        except ChildProcessError:
            code = 0
        if self.reaper is not None and uid is not None:
            self.reaper.reap(uid)
        if self.mode in ("uid", "landlock"):
            self._sweep_orphans()
        return code

    def _sweep_orphans(self) -> None:
        """Kill children that are neither live workers nor the reaper: the
        orphaned forks of ended workers, reparented here."""
        keep = set(self.live) | ({self.reaper.pid} if self.reaper else set())
        for _ in range(10):
            try:
                with open(f"/proc/self/task/{os.getpid()}/children") as f:
                    orphans = [int(p) for p in f.read().split() if int(p) not in keep]
            except OSError:
                return
            if not orphans:
                return
            for pid in orphans:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except OSError:
                    pass

    def _end_all(self) -> None:
        """The judge went away (it may have been killed): end every worker it left."""
        for pid in list(self.live):
            self._end(pid)


if __name__ == "__main__":
    main()
