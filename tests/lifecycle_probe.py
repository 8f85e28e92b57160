"""Stop a running `grade-class` as an instructor would, and report what outlived it.

    python tests/lifecycle_probe.py SUBMISSIONS OUT --stop kill|int|none [--after N] [-- grade-class args]

This process makes itself a child subreaper (Linux), so every process that
grade-class started, however deep (pool processes, the resource tracker,
zygotes, workers, whatever a worker forked), is re-parented to it when its own
parent dies: listing this process's children then lists exactly the leftovers.
It starts grade-class in a session of its own, waits until N reports exist,
then sends SIGKILL to the grader alone (`kill -9 PID`) or SIGINT to its process
group (Ctrl-C in a terminal), or (`none`) lets it finish, and prints one JSON
object: how long the grader took to exit, its exit code and stderr, which
processes were still alive `--settle` seconds after it, and which reports were
written after the stop.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
ROOT = Path(__file__).resolve().parent.parent


def _children() -> list[tuple[int, str]]:
    """(pid, command line) of this process's live children; zombies are reaped."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    me, found = str(os.getpid()), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if fields[1] == me and fields[0] != "Z":
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry), cmdline.strip()[:200]))
        except (OSError, IndexError):
            continue
    return found


def _reports(out: Path) -> dict[str, int]:
    found = {}
    for path in (out / "reports").glob("*/*.json"):
        try:
            found[str(path.relative_to(out))] = path.stat().st_mtime_ns
        except OSError:
            pass
    return found


def _as_from_a_terminal() -> None:
    """A shell starts a foreground command with Ctrl-C at its default, whatever
    the process that runs this probe (a test runner) inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _sigint_state(pid: int) -> str:
    """How the grader stood towards SIGINT when it was sent: a test that fails
    says whether Ctrl-C was ignored or blocked rather than slow."""
    try:
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":\t" in line)
    except OSError:
        return "unknown"
    bit = 1 << (signal.SIGINT - 1)
    states = [name for name, key in (("ignored", "SigIgn"), ("blocked", "SigBlk"), ("caught", "SigCgt"))
              if int(status.get(key, "0").strip(), 16) & bit]
    return "+".join(states) or "default"


def probe(submissions: Path, out: Path, stop: str, after: int, settle: float, args: list[str]) -> dict:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    out.mkdir(parents=True, exist_ok=True)
    stderr_path = out.parent / f"{out.name}.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "grader", "grade-class", str(submissions), "--out",
                                 str(out), *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True, preexec_fn=_as_from_a_terminal)
    deadline = time.monotonic() + 600
    while len(_reports(out)) < after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None and stop != "none":
        return {"error": "grade-class ended before the stop", "exit_code": proc.returncode,
                "stderr": stderr_path.read_text(errors="replace")[-3000:]}
    sigint = _sigint_state(proc.pid)
    stopped = time.monotonic()
    if stop == "kill":
        os.kill(proc.pid, signal.SIGKILL)
    elif stop == "int":
        os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait()
    exited = time.monotonic()
    at_stop = _reports(out)
    alive = _children()
    while alive and time.monotonic() < exited + settle:
        time.sleep(0.05)
        alive = _children()
    gone = time.monotonic()
    time.sleep(0.5)  # a report written by something that died late would show now
    later = _reports(out)
    for pid, _ in alive:  # leave nothing behind, whatever the verdict
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return {
        "stop": stop,
        "sigint_at_stop": sigint,
        "exit_code": code,
        "exit_latency_s": round(exited - stopped, 3),
        "all_gone_after_s": None if alive else round(gone - exited, 3),
        "left_running": [cmd for _, cmd in alive],
        "reports_at_stop": len(at_stop),
        "reports_after_stop": sorted(p for p, t in later.items() if at_stop.get(p) != t),
        "reports_lost": sorted(set(at_stop) - set(later)),
        "stderr": stderr_path.read_text(errors="replace")[-3000:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--stop", choices=("kill", "int", "none"), required=True)
    parser.add_argument("--after", type=int, default=1, help="stop once this many reports exist")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds leftovers get to exit")
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--"]
    print(json.dumps(probe(args.submissions, args.out, args.stop, args.after, args.settle, rest), indent=2))


if __name__ == "__main__":
    main()
