"""Gradescope: the results.json of one learner, and the autograder zip that writes it.

Owns only the Gradescope format (gradescope/autograder_samples docs/specs.md)
and the zip layout (setup.sh, run_autograder, source/); grading itself is
grade.grade(). `python -m grader.gradescope run ROOT` is what run_autograder
calls inside the container: it grades every submitted notebook and always
writes ROOT/results/results.json, even when something fails.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import traceback
import zipfile
from pathlib import Path

from grader.report import write_atomic
from grader.results import Report

FORMATS = ("text", "html", "simple_format", "md", "ansi")
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
FAILED_MESSAGE = "the autograder failed; your instructor has been told"


def _fence(text: str) -> str:
    """A markdown code block that no backtick run inside `text` can close early."""
    ticks = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{ticks}text\n{text}\n{ticks}"


def _test(name: str, number: str | None, score: float, max_score: float, status: str,
          message: str, visibility: str) -> dict:
    test = {"name": name, "score": score, "max_score": max_score,
            "status": "passed" if status == "passed" else "failed",
            # Gradescope knows only passed/failed, so our own word (timeout, memory…) leads.
            "output": f"**{status}**" + (f"\n\n{_fence(message)}" if message else ""),
            "output_format": "md", "visibility": visibility}
    if number is not None:
        test["number"] = number
    return test


def _lesson_number(lesson: str) -> str:
    head = lesson.split("_", 1)[0]
    return str(int(head)) if head.isdigit() else head


def results_json(reports: list[Report], execution_time: float,
                 ungradable: list[tuple[str, str]] = (), visibility: str = "visible",
                 failures: list[tuple[str, str]] = ()) -> dict:
    """Gradescope's results.json for one learner: every lesson they submitted.

    `ungradable` holds (file, why) for files that could not be read;
    `failures` holds (file, exception type) where the autograder itself broke.
    """
    tests, lines = [], []
    for report in reports:
        exercises = list(report.by_exercise())
        seen: dict[str, int] = {}
        for t in report.tests:
            seen[t.exercise] = seen.get(t.exercise, 0) + 1
            check = t.name.removeprefix("test_").removeprefix(f"{t.exercise}_").replace("_", " ")
            number = f"{_lesson_number(report.lesson)}.{exercises.index(t.exercise) + 1}.{seen[t.exercise]}"
            tests.append(_test(f"{report.lesson} · {t.exercise} · {check}", number, t.score,
                               t.max_score, t.status, t.message, visibility))
        parts = ", ".join(f"{ex} {got:g}/{out_of:g}" for ex, (got, out_of) in report.by_exercise().items())
        lines.append(f"- **{report.lesson}**: {report.score:g} / {report.max_score:g} ({parts})")
        lines.extend(f"  - note: {n}" for n in report.notices)
    for i, (name, why) in enumerate(ungradable, 1):
        tests.append(_test(f"{name} · could not be graded", f"0.{i}", 0.0, 0.0, "ungradable",
                           why, visibility))
        lines.append(f"- **{name}**: could not be graded (see below)")
    for name, kind in failures:
        tests.append(_test(f"{name} · autograder failure", None, 0.0, 0.0, "error",
                           f"{FAILED_MESSAGE} ({kind}).", visibility))
        lines.append(f"- **{name}**: {FAILED_MESSAGE}")
    score = round(sum(r.score for r in reports), 6)
    if not lines:
        lines.append("- no notebook (.ipynb) was found in your submission; upload your lesson notebooks.")
        tests.append(_test("submission · no notebook found", "0.0", 0.0, 0.0, "failed",
                           "Upload the .ipynb file(s) of the lessons you completed.", visibility))
    output = "\n".join([f"**Score: {score:g}**", "", *lines])
    return {"score": score, "execution_time": int(round(execution_time)), "output": output,
            "output_format": "md", "stdout_visibility": "hidden",
            "extra_data": {"receipts": {r.lesson: r.receipt for r in reports}}, "tests": tests}


_TOP = {"score": (int, float), "execution_time": (int, float), "output": str, "output_format": str,
        "test_output_format": str, "test_name_format": str, "visibility": str,
        "stdout_visibility": str, "extra_data": dict, "tests": list, "leaderboard": list}
_TEST = {"score": (int, float), "max_score": (int, float), "status": str, "name": str,
         "name_format": str, "number": str, "output": str, "output_format": str, "tags": list,
         "visibility": str, "extra_data": dict}
_REQUIRED_TEST = ("name", "score", "max_score", "status", "output")


def _field_problems(where: str, data: dict, types: dict) -> list[str]:
    problems = []
    for key, value in data.items():
        if key not in types:
            problems.append(f"{where}: unknown field {key!r}")
        elif isinstance(value, bool) or not isinstance(value, types[key]):
            problems.append(f"{where}.{key}: {type(value).__name__} is not the right type")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where}.{key}: {value} is not a finite number")
        elif key.endswith("format") and value not in FORMATS:
            problems.append(f"{where}.{key}: {value!r} is not one of {FORMATS}")
        elif key.endswith("visibility") and value not in VISIBILITIES:
            problems.append(f"{where}.{key}: {value!r} is not one of {VISIBILITIES}")
    return problems


def validate_results(data: dict) -> list[str]:
    """Problems with `data` as a Gradescope results.json (empty when it is valid)."""
    if not isinstance(data, dict):
        return ["results: not a JSON object"]
    problems = _field_problems("results", data, _TOP)
    if "score" not in data:
        problems.append("results: no 'score' (this autograder always sets the total)")
    tests = data.get("tests")
    for i, test in enumerate(tests if isinstance(tests, list) else []):
        where = f"tests[{i}]"
        if not isinstance(test, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        problems += _field_problems(where, test, _TEST)
        problems += [f"{where}: missing {key!r}" for key in _REQUIRED_TEST if key not in test]
        if "status" in test and test["status"] not in ("passed", "failed"):
            problems.append(f"{where}.status: {test['status']!r} is not 'passed' or 'failed'")
        if not all(isinstance(tag, str) for tag in test.get("tags", []) or []):
            problems.append(f"{where}.tags: every tag must be a string")
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        problems.append(f"results: not serialisable as strict JSON ({exc})")
    return problems


SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update && apt-get install -y python3 python3-pip
fi
# The image holds nothing but this autograder, so installing into the system Python
# is fine; newer Ubuntu images refuse that (PEP 668) unless told.
export PIP_BREAK_SYSTEM_PACKAGES=1
# PyTorch's CPU-only wheels: Gradescope has no GPU, and PyPI's Linux wheel is a multi-GB
# CUDA build. constraints.txt's torch==X matches X+cpu, which is preferred.
python3 -m pip install --extra-index-url https://download.pytorch.org/whl/cpu \\
    -c /autograder/source/constraints.txt /autograder/source/
# Hidden checks are for instructors only: where the container refuses namespaces, workers
# run under an unused uid, and file permissions (with Landlock) are what hide them.
chmod -R o= /autograder/source "$(python3 -c 'import grader, os; print(os.path.dirname(grader.__file__))')/checks"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission. AUTOGRADER_ROOT and PYTHON let a test run
# it in a temporary folder; there it also needs PYTHONPATH=$AUTOGRADER_ROOT/source
# (on Gradescope setup.sh's pip install makes the grader importable).
ROOT="${AUTOGRADER_ROOT:-/autograder}"
cd "$ROOT"
exec "${PYTHON:-python3}" -m grader.gradescope run "$ROOT"
"""

_SOURCE_FILES = ("pyproject.toml", "constraints.txt", "README.md")


def build_autograder_zip(out_zip: Path, course_root: Path) -> Path:
    """Write the Gradescope autograder zip: setup.sh, run_autograder and source/."""
    course_root, out_zip = Path(course_root), Path(out_zip)
    entries: dict[str, bytes] = {"setup.sh": SETUP_SH.encode(), "run_autograder": RUN_AUTOGRADER.encode()}
    for name in _SOURCE_FILES:
        entries[f"source/{name}"] = (course_root / name).read_bytes()
    for path in sorted((course_root / "grader").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            entries[f"source/{path.relative_to(course_root).as_posix()}"] = path.read_bytes()
    for path in sorted((course_root / "notebooks").glob("*.ipynb")):
        entries[f"source/notebooks/{path.name}"] = path.read_bytes()
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_zip.with_name(out_zip.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(entries.items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # same input, same zip
            executable = name in ("setup.sh", "run_autograder")
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    tmp.replace(out_zip)
    return out_zip


def run(root: Path) -> int:
    """Grade ROOT/submission/**/*.ipynb; always write ROOT/results/results.json."""
    root, start = Path(root), time.monotonic()
    out = root / "results" / "results.json"
    ungradable: list[tuple[str, str]] = []
    failures: list[tuple[str, str]] = []
    try:
        from grader.config import GraderConfig
        from grader.grade import grade
        from grader.notebook import NotebookError

        submission = root / "submission"
        out.parent.mkdir(parents=True, exist_ok=True)
        # Learner code (in the workers) must not read the course source with its hidden
        # checks, the other uploaded files, or the results being written.
        config = GraderConfig(course_root=root / "source", hidden_paths=tuple(
            str(p) for p in (root / "source", submission, out.parent)))
        files = sorted(p for p in submission.rglob("*.ipynb") if p.is_file() and not any(
            part.startswith((".", "__MACOSX")) for part in p.relative_to(submission).parts))
        best: dict[str, tuple[Report, str]] = {}
        files_of: dict[str, list[str]] = {}
        for path in files:
            name = path.relative_to(submission).as_posix()
            try:
                report = grade(path, config)
            except NotebookError as exc:
                ungradable.append((name, str(exc).replace(str(path), name)))
                continue
            except Exception as exc:  # noqa: BLE001 - grade the other files, then fail loudly
                traceback.print_exc()  # stdout/stderr reach the instructor only
                failures.append((name, type(exc).__name__))
                continue
            print(f"graded {name}: {report.lesson} {report.score:g}/{report.max_score:g}")
            # Two files for one lesson must not count twice: keep the better one.
            files_of.setdefault(report.lesson, []).append(name)
            if report.lesson not in best or report.score > best[report.lesson][0].score:
                best[report.lesson] = (report, name)
        reports = []
        for lesson, (report, name) in sorted(best.items()):
            if len(files_of[lesson]) > 1:
                report.notices.append(f"this lesson was in {len(files_of[lesson])} files "
                                      f"({', '.join(files_of[lesson])}); {name} scored best and counts.")
            reports.append(report)
        data = results_json(reports, time.monotonic() - start, ungradable, failures=failures)
    except Exception as exc:  # noqa: BLE001 - a learner must never be left without a result
        traceback.print_exc()
        failures.append(("autograder", type(exc).__name__))
        data = results_json([], time.monotonic() - start, failures=failures)
    write_atomic(out, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        sys.exit("usage: python -m grader.gradescope run AUTOGRADER_ROOT")
    sys.exit(run(Path(sys.argv[2])))
