"""What a hidden check holds: a narrow, plain-data handle on the learner's code.

`Learner.call("scale_gradients", grads, 8.0)` runs the learner's function in a
worker process and returns a decoded plain value. A raise in the learner's code
comes back as `LearnerRaised`; a hang, a crash or a memory blow-up raises the
matching `WorkerFailure`, which ends the check with that status.

Each exercise gets its own worker, which holds the lesson's support cells and
that exercise's cell only, so one broken exercise cannot touch another. A
worker that dies is replaced for the next check, and a cell that fails to load
fails every check of its exercise at once, without paying its timeout again.

Time is bounded twice. Once a call of an exercise runs out of time, the rest of
that exercise's checks fail at once with the same status: a looping function
costs one timeout, not one per check. And a whole submission has a wall-clock
budget (`submission_budget`), from its first check to its last, which caps
every wait on its workers: code that sleeps just under the per-check limit on
every call still costs at most the budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from grader.config import GraderConfig
from grader.sandbox import Worker, WorkerCrashed, WorkerFailure, WorkerMemory, WorkerTimeout
from grader.wire import Ref

__all__ = ["Learner", "LearnerRaised", "Outcome", "Ref", "ExerciseMissing"]


class LearnerRaised(Exception):
    """The learner's code raised an exception (NotImplementedError included)."""

    def __init__(self, type_name: str, message: str, where: str = "", memory: bool = False):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.where = where
        self.memory = memory

    @property
    def not_implemented(self) -> bool:
        return self.type_name == "NotImplementedError"

    @classmethod
    def from_reply(cls, raised: dict) -> "LearnerRaised":
        return cls(str(raised.get("type", "Exception")), str(raised.get("message", "")),
                   str(raised.get("where", "")), bool(raised.get("memory", False)))


class ExerciseMissing(BaseException):
    """The submission has no usable cell for this exercise."""

    status = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Outcome:
    """One call's result in a batch: a value, or what the learner's code raised."""

    value: object = None
    raised: LearnerRaised | None = None

    @property
    def ok(self) -> bool:
        return self.raised is None


@dataclass(frozen=True)
class ExerciseCode:
    """The code a worker needs for one exercise."""

    name: str
    support: tuple[str, ...]  # the lesson's support cells, from the official notebook
    source: str | None  # the learner's cell, or None when it is missing
    problem: str = ""  # why the cell is missing or unusable
    preload: tuple[str, ...] = ()


class _Budget:
    """One submission's wall-clock budget, started by its first check."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline: float | None = None

    def timeout(self, limit: float, what: str) -> float:
        """The time a wait may take: `limit`, or less where the budget ends sooner."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.seconds
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.spent(what)
        return min(limit, left)

    @property
    def over(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def spent(self, what: str, output: str = "") -> WorkerTimeout:
        return WorkerTimeout(f"the submission used up its grading time ({self.seconds:g} s for all "
                             f"its checks together) while {what}", output)


class _ExerciseSession:
    def __init__(self, code: ExerciseCode, config: GraderConfig, budget: _Budget):
        self.code = code
        self.config = config
        self.budget = budget
        self.worker: Worker | None = None
        self.load_failure: BaseException | None = None

    @property
    def out_of_time(self) -> BaseException | None:
        """The timeout that ends every remaining check of this exercise, if any."""
        if isinstance(self.load_failure, WorkerTimeout):
            return self.load_failure
        if self.budget.over:
            return self.budget.spent(f"checking {self.code.name}")
        return None

    def worker_ready(self) -> Worker:
        if self.load_failure is not None:
            raise self.load_failure
        if self.code.source is None:
            self.load_failure = ExerciseMissing(self.code.problem)
            raise self.load_failure
        if self.worker is not None and self.worker.alive:
            return self.worker
        self.budget.timeout(self.config.start_timeout, "starting a worker")  # a spent budget starts none
        self.worker = Worker(self.config, self.code.preload)
        try:
            for i, source in enumerate(self.code.support):
                self._exec(source, f"<lesson setup {i + 1}>", "setting up the lesson's imports")
            self._exec(self.code.source, f"<exercise {self.code.name}>", "running your exercise cell")
        except LearnerRaised as exc:
            self.load_failure = exc
            self.close()
            raise
        except WorkerFailure as exc:
            self.load_failure = type(exc)(exc.message, exc.output)
            self.close()
            raise
        return self.worker

    def _exec(self, source: str, filename: str, what: str) -> None:
        _unwrap(self._request(self.worker, {"op": "exec", "source": source, "filename": filename},
                              self.config.load_timeout, what))

    def request(self, message: dict, what: str) -> dict:
        worker = self.worker_ready()
        try:
            return self._request(worker, message, self.config.check_timeout, what)
        except WorkerTimeout as exc:
            # The exercise's remaining checks fail at once, with this same status.
            self.close()
            self.load_failure = WorkerTimeout(
                f"{exc.message}; an earlier check of {self.code.name} ran out of time, so its "
                "remaining checks were not run", exc.output)
            raise
        except WorkerFailure:
            self.worker = None
            raise

    def _request(self, worker: Worker, message: dict, limit: float, what: str) -> dict:
        try:
            return worker.request(message, self.budget.timeout(limit, what), what)
        except WorkerTimeout as exc:
            if self.budget.over:
                raise self.budget.spent(what, exc.output) from None
            raise

    def close(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None


def _unwrap(reply: dict):
    if "raised" in reply:
        raised = LearnerRaised.from_reply(reply["raised"])
        if raised.memory:
            raise WorkerMemory(f"it ran out of memory ({raised.message})")
        raise raised
    return reply.get("ok")


class Learner:
    """The hidden checks' handle on one submission, scoped to one exercise."""

    def __init__(self, session: _ExerciseSession):
        self._session = session

    @property
    def exercise(self) -> str:
        return self._session.code.name

    def call(self, target: str, *args, store: str | None = None, **kwargs):
        """Call `target` (a name, or `obj.method`) in the worker and return its result.

        With `store="name"` the result stays in the worker under that name, to be
        passed back later as `Ref("name")`, and None is returned.
        """
        message = {"op": "call", "target": target, "args": list(args), "kwargs": kwargs,
                   "store": store}
        return _unwrap(self._session.request(message, f"calling {target}"))

    def get(self, target: str):
        """Read an attribute such as `scaler.scale` from the worker."""
        return _unwrap(self._session.request({"op": "get", "target": target}, f"reading {target}"))

    def run(self, source: str) -> None:
        """Run grader-authored helper code (say, building a model) in the worker."""
        _unwrap(self._session.request({"op": "exec", "source": source,
                                       "filename": "<grader helper>"}, "setting up a check"))

    def map(self, target: str, calls: list[tuple]) -> list[Outcome]:
        """Call `target` once per argument tuple, all in one round trip."""
        reply = self._session.request({"op": "map", "target": target,
                                       "calls": [list(args) for args in calls]},
                                      f"calling {target} on {len(calls)} inputs")
        if "raised" in reply:
            _unwrap(reply)
        outcomes = []
        for item in reply.get("outcomes", []):
            if "raised" in item:
                raised = LearnerRaised.from_reply(item["raised"])
                if raised.memory:
                    raise WorkerMemory(f"it ran out of memory ({raised.message})")
                outcomes.append(Outcome(raised=raised))
            else:
                outcomes.append(Outcome(value=item.get("ok")))
        if len(outcomes) != len(calls):
            raise WorkerCrashed("the worker returned the wrong number of results")
        return outcomes

    def ping(self) -> None:
        """Make sure the exercise's cell loads, without calling anything."""
        self._session.worker_ready()


class Submission:
    """All exercise sessions of one graded submission."""

    def __init__(self, exercises: dict[str, ExerciseCode], config: GraderConfig):
        self.config = config
        budget = _Budget(config.submission_budget)
        self._sessions = {name: _ExerciseSession(code, config, budget) for name, code in exercises.items()}

    def learner(self, exercise: str) -> Learner:
        return Learner(self._sessions[exercise])

    def out_of_time(self, exercise: str) -> BaseException | None:
        """The timeout that ends this exercise's remaining checks at once, if any."""
        session = self._sessions.get(exercise)
        return session.out_of_time if session else None

    @property
    def preloads(self) -> set[tuple[str, ...]]:
        """The modules its workers' zygotes import (say numpy and torch)."""
        return {session.code.preload for session in self._sessions.values()}

    def source(self, exercise: str) -> str:
        """The learner's own code for an exercise ("" when missing)."""
        session = self._sessions.get(exercise)
        return (session.code.source or "") if session else ""

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()

    def __enter__(self) -> "Submission":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

