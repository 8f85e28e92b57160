"""Run a lesson's hidden checks with pytest, in this (trusted) process.

A tiny plugin object gives each check its `learner` fixture and collects the
outcome of every check through pytest's report hook, not by parsing text. The
exception that ended a check decides its status; the learner-facing message is
built from that exception alone, so a check's source never reaches a report.
"""

from __future__ import annotations

import functools
import io
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from grader.checkkit import CheckFailed
from grader.learner import ExerciseMissing, LearnerRaised, Submission
from grader.results import CheckResult
from grader.sandbox import WorkerFailure, prestart

CHECKS_DIR = Path(__file__).resolve().parent / "checks"


SHINGLE = 32


def checks_file(lesson_id: str) -> Path:
    return CHECKS_DIR / f"test_{lesson_id}.py"


@functools.cache
def _hidden_shingles() -> frozenset[str]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(CHECKS_DIR.glob("test_*.py")))
    return frozenset(text[i:i + SHINGLE] for i in range(len(text) - SHINGLE + 1))


def scrub(text: str, own: str = "") -> str:
    """Hide learner-produced text that quotes the hidden checks.

    Where the worker can read the grader's files (no mount namespace), a
    learner could return or raise a check's source; a report must not echo it.
    Text that is also in the learner's own code (a line quoted by a
    SyntaxError, say) is theirs to see.
    """
    hidden = _hidden_shingles()
    windows = (text[i:i + SHINGLE] for i in range(len(text) - SHINGLE + 1))
    if any(w in hidden and w not in own for w in windows):
        return "<hidden: this value quotes the grader's own files>"
    return text


class _Collector:
    """The plugin: gives checks their fixtures and records every outcome.

    One pytest session grades many submissions of one lesson: each check is
    parametrized over the submissions, so collection is paid once per batch,
    and items run grouped by submission so each one's workers close as soon as
    its last check is done.
    """

    def __init__(self, submissions: list[Submission], seed: int):
        self.submissions = submissions
        self._seed = seed
        self.results: list[list[CheckResult]] = [[] for _ in submissions]
        self.seconds: list[float] = [0.0 for _ in submissions]  # each one's own checks
        self.collection_errors: list[str] = []
        self._current: int | None = None

    def pytest_generate_tests(self, metafunc):
        if "learner" in metafunc.fixturenames:
            metafunc.parametrize("learner", range(len(self.submissions)), indirect=True,
                                 ids=[f"s{i}" for i in range(len(self.submissions))])

    def pytest_collection_modifyitems(self, items):
        items.sort(key=lambda item: item.callspec.params.get("learner", 0)
                   if hasattr(item, "callspec") else 0)

    @pytest.fixture
    def learner(self, request):
        marker = request.node.get_closest_marker("exercise")
        return self.submissions[request.param].learner(marker.kwargs["name"])

    @pytest.fixture
    def seed(self):
        return self._seed

    def pytest_runtest_setup(self, item):
        index = item.callspec.params.get("learner") if hasattr(item, "callspec") else None
        if index != self._current and self._current is not None:
            self.submissions[self._current].close()
        self._current = index

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item):
        """A check of an exercise already out of time fails at once, with that timeout,
        before it computes anything: a looping submission pays one timeout per exercise."""
        marker = item.get_closest_marker("exercise")
        if marker is not None and hasattr(item, "callspec"):
            failure = self.submissions[item.callspec.params["learner"]].out_of_time(marker.kwargs["name"])
            if failure is not None:
                raise failure

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        """Record the outcome, and make a bare report: pytest's own traceback
        rendering costs more than a whole check and is never shown to anyone."""
        exc = call.excinfo.value if call.excinfo else None
        marker = item.get_closest_marker("exercise")
        if hasattr(item, "callspec"):
            self.seconds[item.callspec.params["learner"]] += call.duration
        if marker is not None and hasattr(item, "callspec") and (call.when == "call" or exc is not None):
            points = float(marker.kwargs["points"])
            index = item.callspec.params["learner"]
            status, message = classify(exc, self.submissions[index].source(marker.kwargs["name"]))
            self.results[index].append(CheckResult(
                name=item.originalname, exercise=marker.kwargs["name"],
                score=points if status == "passed" else 0.0, max_score=points,
                status=status, message=message or _describe(item)))
        outcome = "passed" if exc is None else "failed"
        longrepr = None if exc is None else f"{type(exc).__name__}: {str(exc)[:500]}"
        return pytest.TestReport(item.nodeid, item.location, {}, outcome, longrepr, call.when,
                                 duration=call.duration, start=call.start, stop=call.stop)

    def pytest_collectreport(self, report):
        if report.failed:
            self.collection_errors.append(str(report.longrepr)[-2000:])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _describe(item) -> str:
    doc = (item.function.__doc__ or "").strip().splitlines()
    return doc[0] if doc else item.name.removeprefix("test_").replace("_", " ")


def classify(exc: BaseException | None, own: str = "") -> tuple[str, str]:
    """Map how a check ended to (status, learner-facing message)."""
    if exc is None:
        return "passed", ""
    if isinstance(exc, CheckFailed):
        return "failed", exc.message(lambda text: scrub(text, own))
    if isinstance(exc, LearnerRaised):
        if exc.not_implemented:
            return "error", "not implemented yet: replace the `raise NotImplementedError` line with your code."
        where = f" ({exc.where})" if exc.where else ""
        return "error", f"your code raised {scrub(_cut(exc.message, 300), own)}{where}"
    if isinstance(exc, ExerciseMissing):
        return "error", exc.message
    if isinstance(exc, WorkerFailure):
        text = {"timeout": "Your code took too long: ", "memory": "Your code ran out of memory: ",
                "crashed": "Your code stopped the grading process: "}[exc.status] + exc.message + "."
        if exc.status == "crashed" and exc.message.startswith("the reply"):
            text += (" Likely cause: a return value far larger than the answer, or made of objects "
                     "where plain numbers are expected.")
        elif exc.status == "crashed":
            text += " Likely cause: a call such as os._exit() or a crash in native code."
        if exc.status == "timeout":
            text += " Likely cause: an infinite loop, or a loop that is far too slow."
        return exc.status, text
    return "error", ("the grader could not finish this check (an internal error, not your "
                     "fault); your instructor has the details.")


def run_checks(lesson_id: str, submissions: list[Submission], seed: int
               ) -> tuple[list[list[CheckResult]], list[float], list[str]]:
    """Run every hidden check of a lesson on each submission, in one pytest session.

    Returns one list of results per submission, the seconds each submission
    took (its own checks plus an equal share of the session's overhead), and any
    internal errors.
    """
    start = time.perf_counter()
    path = checks_file(lesson_id)
    collector = _Collector(submissions, seed)
    # unraisableexception and threadexception call gc.collect() at the end of every
    # session, which costs more than a whole lesson's checks once torch is loaded.
    args = [str(path), "-q", "-p", "no:cacheprovider", "-p", "no:nbval", "-p", "no:randomly",
            "-p", "no:unraisableexception", "-p", "no:threadexception",
            "--import-mode=importlib", "-c", str(CHECKS_DIR / "pytest.ini"),
            "--rootdir", str(CHECKS_DIR), "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    if submissions:  # the zygotes import torch while pytest imports the checks (and torch)
        prestart(set().union(*(s.preloads for s in submissions)), submissions[0].config)
    sink = io.StringIO()
    try:
        with redirect_stdout(sink), redirect_stderr(sink):
            code = pytest.main(args, plugins=[collector])
    finally:
        for submission in submissions:
            submission.close()
    errors = list(collector.collection_errors)
    if code not in (0, 1) and not errors:
        errors.append(f"pytest exited with {code}: {sink.getvalue()[-2000:]}")
    overhead = max(0.0, time.perf_counter() - start - sum(collector.seconds)) / max(len(submissions), 1)
    return collector.results, [own + overhead for own in collector.seconds], errors


def check_points(lesson_id: str) -> dict[str, float]:
    """Points per exercise, read from the hidden checks' markers."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"_points_{lesson_id}", checks_file(lesson_id))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    totals: dict[str, float] = {}
    for name in dir(module):
        fn = getattr(module, name)
        if name.startswith("test_") and callable(fn):
            for mark in getattr(fn, "pytestmark", []):
                if mark.name == "exercise":
                    ex = mark.kwargs["name"]
                    totals[ex] = totals.get(ex, 0.0) + float(mark.kwargs["points"])
    return totals
