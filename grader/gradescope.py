"""Gradescope: the results.json of one learner, and the autograder zip that writes it.

Owns only the Gradescope format (gradescope/autograder_samples docs/specs.md)
and the zip layout: setup.sh and run_autograder at the root of the zip beside
the course source, which Gradescope extracts to /autograder/source. Grading
itself is grade.grade(). `python -m grader.gradescope run ROOT [--assignment ID]`
is what run_autograder calls inside the container: it grades every submitted
notebook, lets the same rule as grade-class pick one file per lesson
(grader/selection.py) and always writes ROOT/results/results.json, even when
something fails.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import traceback
from pathlib import Path

from grader import escape
from grader.assignments import VISIBILITIES
from grader.gradescope_zip import ASSIGNMENTS, build_autograder_zip  # noqa: F401 - the CLI builds the zip from here
from grader.report import write_atomic
from grader.results import Report

FORMATS = ("text", "html", "simple_format", "md", "ansi")
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
                 failures: list[tuple[str, str]] = (), adjustments: list[tuple[str, float, str]] = (),
                 notes: list[str] = (), score: float | None = None) -> dict:
    """Gradescope's results.json for one learner: every lesson they submitted.

    `ungradable` holds (file, why) for files that could not be read;
    `failures` holds (file, exception type) where the autograder itself broke;
    `adjustments` holds (name, points, why) for late penalties and overrides, so
    the tests still add up to `score` (by default the sum of the reports).
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
        lines.extend(f"  - note: {escape.markdown_text(n)}" for n in report.notices)
    for i, (name, why) in enumerate(ungradable, 1):
        tests.append(_test(f"{name} · could not be graded", f"0.{i}", 0.0, 0.0, "ungradable",
                           why, visibility))
        lines.append(f"- **{escape.markdown_text(name)}**: could not be graded (see below)")
    for name, points, why in adjustments:
        tests.append(_test(name, None, points, 0.0, "passed" if points >= 0 else "failed", why, visibility))
        lines.append(f"- **{escape.markdown_text(name)}**: {points:+g}")
    for name, kind in failures:
        tests.append(_test(f"{name} · autograder failure", None, 0.0, 0.0, "error",
                           f"{FAILED_MESSAGE} ({kind}).", visibility))
        lines.append(f"- **{escape.markdown_text(name)}**: {FAILED_MESSAGE}")
    lines.extend(f"- note: {escape.markdown_text(note)}" for note in notes)  # file names are the learner's
    if score is None:
        score = round(sum(r.score for r in reports) + sum(p for _, p, _ in adjustments), 6)
    if not lines:
        lines.append("- no notebook (.ipynb) was found in your submission; upload your lesson notebooks.")
        tests.append(_test("submission · no notebook found", "0.0", 0.0, 0.0, "failed",
                           "Upload the .ipynb file(s) of the lessons you completed.", visibility))
    output = "\n".join([f"**Score: {score:g}**", "", *lines])
    return {"score": score, "execution_time": int(round(execution_time)), "output": output,
            "output_format": "md", "visibility": visibility, "stdout_visibility": "hidden",
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


def learner_results(standing, assignment, execution_time: float,
                    failures: list[tuple[str, str]] = ()) -> dict:
    """results.json from a learner's standing (grader/standing.py): the counted file of
    each lesson, its checks at the assignment's points, the late penalties and overrides
    as their own entries, and the standing's total as the score."""
    from grader.standing import at_assignment_points

    reports, notes = [], []
    for lesson, part in standing.lessons.items():
        if part.counted is not None and part.counted.report.get("status") == "graded":
            reports.append(at_assignment_points(part.counted.report, assignment))
        if part.note:
            notes.append(f"{lesson}: {part.note}")
    ungradable = [(f.name, "; ".join(f.report.get("notices", []))) for f in standing.files
                  if f.report.get("status") != "graded"]
    adjustments = [(f"{lesson} · late penalty", -part.penalty,
                    f"{part.counted.name}: {part.lateness.describe(assignment.late)}")
                   for lesson, part in standing.lessons.items() if part.penalty]
    adjustments += [(f"{a['target']} · adjusted by your instructor", round(a["after"] - a["before"], 2),
                     f"{a['change']}: {a['reason']}") for a in standing.audit]
    return results_json(reports, execution_time, ungradable, assignment.visibility, failures,
                        adjustments, notes, score=standing.total)


def run(root: Path, assignment_id: str | None = None) -> int:
    """Grade ROOT/submission/**/*.ipynb; always write ROOT/results/results.json."""
    root, start = Path(root), time.monotonic()
    out = root / "results" / "results.json"
    failures: list[tuple[str, str]] = []
    try:
        from grader.config import GraderConfig
        from grader.grade import grade, guess_lesson
        from grader.notebook import NotebookError
        from grader.standing import ClassSetup, Submitted, standings

        submission = root / "submission"
        out.parent.mkdir(parents=True, exist_ok=True)
        # Learner code (in the workers) must not read the course source with its hidden
        # checks, the other uploaded files, or the results being written.
        config = GraderConfig(course_root=root / "source", hidden_paths=tuple(
            str(p) for p in (root / "source", submission, out.parent)))
        setup, upload_time = _setup(root, config, assignment_id)
        files = sorted(p for p in submission.rglob("*.ipynb") if p.is_file() and not any(
            part.startswith((".", "__MACOSX")) for part in p.relative_to(submission).parts))
        graded = []
        for path in files:
            name = path.relative_to(submission).as_posix()
            try:
                data = grade(path, config).to_dict()
                print(f"graded {name}: {data['lesson']} {data['score']:g}/{data['max_score']:g}")
            except NotebookError as exc:
                data = Report(guess_lesson(path, config), [], [str(exc).replace(str(path), name)],
                              status="ungradable").to_dict()
            except Exception as exc:  # noqa: BLE001 - grade the other files, then fail loudly
                traceback.print_exc()  # stdout/stderr reach the instructor only
                failures.append((name, type(exc).__name__))
                continue
            graded.append(Submitted("submission", name, data, submitted=_submitted_at(name, path, upload_time)))
        [standing] = standings(graded, setup)
        data = learner_results(standing, setup.assignment, time.monotonic() - start, failures)
    except Exception as exc:  # noqa: BLE001 - a learner must never be left without a result
        traceback.print_exc()
        failures.append(("autograder", type(exc).__name__))
        data = results_json([], time.monotonic() - start, failures=failures)
    write_atomic(out, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return 1 if failures else 0


def _setup(root: Path, config, assignment_id: str | None):
    """The assignment to grade against, the submitter (for extensions) and the upload time,
    from the zip's assignments.toml and Gradescope's submission_metadata.json."""
    from grader.assignments import load_assignment, native_points, parse_time, whole_course
    from grader.roster import Roster, Student
    from grader.standing import ClassSetup

    native = native_points(config.course_root)
    assignment = (load_assignment(config.course_root / ASSIGNMENTS, assignment_id, native)
                  if assignment_id else whole_course(native))
    try:
        metadata = json.loads((root / "submission_metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metadata = {}
    users = metadata.get("users") or [{}]
    roster = Roster([Student("submission", str(users[0].get("id", "")), str(users[0].get("name", "")),
                             str(users[0].get("email", "")))])
    created = metadata.get("created_at")
    upload_time = parse_time(created, "UTC", "submission_metadata.json created_at") if created else None
    return ClassSetup(assignment, roster), upload_time


def _submitted_at(name: str, path: Path, upload_time):
    """Every file of one upload shares its upload time; without metadata, the file's own."""
    from grader.submission_times import SubmittedAt, submitted_at

    if upload_time is not None:
        return SubmittedAt(upload_time, "Gradescope upload time")
    return submitted_at(name, path, {})


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) not in (2, 4) or args[0] != "run" or (len(args) == 4 and args[2] != "--assignment"):
        sys.exit("usage: python -m grader.gradescope run AUTOGRADER_ROOT [--assignment ID]")
    sys.exit(run(Path(args[1]), args[3] if len(args) == 4 else None))
