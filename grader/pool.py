"""The grading processes of a class batch: they die with the grader and stop on Ctrl-C.

`grade-class` grades in a ProcessPoolExecutor. Left alone, its processes
outlive a `kill -9` of the grader (they go on grading and writing reports for
minutes), and Ctrl-C waits for every running chunk to finish. Here:

- each grading process asks the kernel to SIGKILL it when the grader dies
  (PR_SET_PDEATHSIG on Linux; elsewhere a thread watches the parent), so
  nothing grades, or writes a report, after the grader is gone. Its zygotes
  then see their socket close and end their workers, and the resource tracker
  sees its pipe close;
- the grading processes ignore SIGINT: Ctrl-C reaches the grader, which kills
  them at once and keeps every report already written (each is written
  atomically, so none is half a file). They are started with SIGINT blocked,
  so a Ctrl-C while they start is neither lost nor a traceback.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """End this process as soon as `parent` (the grader) is gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # it died before the request took effect
                os._exit(1)
            return
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGKILL)


def enter_pool_process(parent: int) -> None:
    """First thing in each grading process."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def sigint_held():
    """Hold Ctrl-C back (pending, not lost) while grading processes are started,
    so they start with it blocked; it is delivered when the block ends."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def kill_pool(pool) -> None:
    """Kill a ProcessPoolExecutor's processes now and let it go without waiting."""
    kill = getattr(pool, "kill_workers", None)  # Python 3.14+
    if kill is not None:
        kill()
    else:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
