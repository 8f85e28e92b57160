"""Run a lesson's hidden checks with pytest, in this (trusted) process.

A tiny plugin object gives each check its `learner` fixture and collects the
outcome of every check through pytest's report hook, not by parsing text. The
exception that ended a check decides its status; the learner-facing message is
built from that exception alone, so a check's source never reaches a report.
"""

from __future__ import annotations

import io
import math
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from grader.checkkit import CheckFailed
from grader.learner import ExerciseMissing, LearnerRaised, Submission
from grader.results import CheckResult
from grader.sandbox import WorkerFailure

CHECKS_DIR = Path(__file__).resolve().parent / "checks"


def checks_file(lesson_id: str) -> Path:
    return CHECKS_DIR / f"test_{lesson_id}.py"


class _Collector:
    def __init__(self, submission: Submission, seed: int):
        self.submission = submission
        self._seed = seed
        self.results: list[CheckResult] = []
        self.collection_errors: list[str] = []

    @pytest.fixture
    def learner(self, request):
        marker = request.node.get_closest_marker("exercise")
        return self.submission.learner(marker.kwargs["name"])

    @pytest.fixture
    def seed(self):
        return self._seed

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        marker = item.get_closest_marker("exercise")
        if marker is None or report.when not in ("setup", "call"):
            return
        if report.when == "setup" and report.passed:
            return
        if report.when == "call" or report.failed:
            points = float(marker.kwargs["points"])
            status, message = classify(call.excinfo.value if call.excinfo else None)
            self.results.append(CheckResult(
                name=item.name, exercise=marker.kwargs["name"],
                score=points if status == "passed" else 0.0, max_score=points,
                status=status, message=message or _describe(item)))

    def pytest_collectreport(self, report):
        if report.failed:
            self.collection_errors.append(str(report.longrepr)[-2000:])


def _describe(item) -> str:
    doc = (item.function.__doc__ or "").strip().splitlines()
    return doc[0] if doc else item.name.removeprefix("test_").replace("_", " ")


def classify(exc: BaseException | None) -> tuple[str, str]:
    """Map how a check ended to (status, learner-facing message)."""
    if exc is None:
        return "passed", ""
    if isinstance(exc, CheckFailed):
        return "failed", exc.message()
    if isinstance(exc, LearnerRaised):
        if exc.not_implemented:
            return "error", "not implemented yet: replace the `raise NotImplementedError` line with your code."
        where = f" ({exc.where})" if exc.where else ""
        return "error", f"your code raised {exc.message}{where}"
    if isinstance(exc, ExerciseMissing):
        return "error", exc.message
    if isinstance(exc, WorkerFailure):
        text = {"timeout": "Your code took too long: ", "memory": "Your code ran out of memory: ",
                "crashed": "Your code stopped the grading process: "}[exc.status] + exc.message + "."
        if exc.status == "crashed":
            text += " Likely cause: a call such as os._exit() or a crash in native code."
        if exc.status == "timeout":
            text += " Likely cause: an infinite loop, or a loop that is far too slow."
        return exc.status, text
    return "error", ("the grader could not finish this check (an internal error, not your "
                     "fault); your instructor has the details.")


def run_checks(lesson_id: str, submission: Submission, seed: int) -> tuple[list[CheckResult], list[str]]:
    """Run every hidden check of a lesson; return results and any internal errors."""
    path = checks_file(lesson_id)
    collector = _Collector(submission, seed)
    args = [str(path), "-q", "-p", "no:cacheprovider", "-p", "no:nbval", "-p", "no:randomly",
            "--import-mode=importlib", "-c", str(CHECKS_DIR / "pytest.ini"),
            "--rootdir", str(CHECKS_DIR), "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    sink = io.StringIO()
    with redirect_stdout(sink), redirect_stderr(sink):
        code = pytest.main(args, plugins=[collector])
    errors = list(collector.collection_errors)
    if code not in (0, 1) and not errors:
        errors.append(f"pytest exited with {code}: {sink.getvalue()[-2000:]}")
    return collector.results, errors


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
    return {k: v for k, v in totals.items() if not math.isnan(v)}
