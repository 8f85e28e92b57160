"""Resource limits a worker sets on itself before learner code runs (POSIX).

Address space, CPU time, file size, process count and core dumps: a memory
bomb gets MemoryError, a spin ends in SIGXCPU, a fork bomb stops at its quota.
Inside its own user namespace a worker's process count is its own (the kernel
counts RLIMIT_NPROC per user per namespace), so the cap holds for a grader run
by an ordinary user too.
"""

from __future__ import annotations

NAMES = {"memory": "RLIMIT_AS", "cpu_seconds": "RLIMIT_CPU", "file_size": "RLIMIT_FSIZE",
         "processes": "RLIMIT_NPROC", "core": "RLIMIT_CORE"}


def apply_limits(limits: dict) -> None:
    try:
        import resource
    except ImportError:  # not POSIX: the wall-clock kill in the judge still applies
        return
    for key, name in NAMES.items():
        value = limits.get(key)
        if value is None or not hasattr(resource, name):
            continue
        limit = getattr(resource, name)
        _, hard = resource.getrlimit(limit)
        value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
        try:
            # CPU keeps a higher hard limit so the soft one ends in SIGXCPU, which
            # the judge reports as a timeout rather than an unexplained kill.
            resource.setrlimit(limit, (value, value + 5 if key == "cpu_seconds" else value))
        except (ValueError, OSError):
            pass
