"""The sandbox: where learner code runs, and the one boundary it may cross.

    JUDGE (trusted)                 ZYGOTE (trusted, runs no learner code)     WORKER (learner code)
    runner, learner, judge.Worker   zygote, walls, landlock, seccomp           worker, wire (nothing else)

    ── setup: mode, preloads, allowlist (JSON) ──────────▶
    ── spawn order (JSON) + 3 pipe ends (SCM_RIGHTS) ────▶  fork, raise walls ─▶
    ◀── pid, return code (JSON) ─────────────────────────
    ── request: framed plain data (grader.wire: JSON + raw float bytes) ──────────────────────▶
    ◀── reply: the same codec, size-capped, decoded without ever unpickling ────────────────────
    ◀── stdout/stderr: bytes on a capped pipe, shown escaped and scrubbed ──────────────────────

Only those cross, only in those directions, only in those forms. Verdicts are
made on the judge's side from decoded plain values; nothing the worker sends
is executed, unpickled or trusted to describe itself.

Who imports whom, so the wall stays visible in the code:

- the judge's side (`judge`, `launch`, `allowlist`, `uids`, and this module's
  names below) never imports `worker`;
- `zygote` and `walls` raise the walls and then hand the forked process to
  `worker.serve`;
- `worker` imports only `grader.wire` (and `limits` when spawned): the only
  grader files mounted into a worker's filesystem (`allowlist.LEARNER_MODULES`).

The walls, strongest first (`launch` picks the strongest the machine allows and
every receipt names them): namespaces (allowlisted read-only root, own PID,
mount, IPC, network and user namespaces, no capabilities); an unused uid plus
Landlock (root in a container that refuses namespaces); Landlock alone; rlimits
only. See README.md, "What holds where".
"""

from __future__ import annotations

_EXPORTS = {
    "Worker": "judge", "WorkerFailure": "judge", "WorkerTimeout": "judge",
    "WorkerCrashed": "judge", "WorkerMemory": "judge", "MAX_REPLY": "judge",
    "prestart": "launch", "close_zygotes": "launch", "describe": "launch", "in_force": "launch",
    "Walls": "launch", "WORKER_ENV": "launch", "refusal": "launch",
}


def __getattr__(name: str):
    # Lazy, so that importing the worker (grader.sandbox.worker) loads none of the judge.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'grader.sandbox' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"grader.sandbox.{module}"), name)


__all__ = list(_EXPORTS)
