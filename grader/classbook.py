"""Everything a class batch leaves for the instructor, written from one set of standings.

grade-class grades every file (OUT/reports/<learner>/<file>.json, its cache);
then this module decides, once, what counts (grader/standing.py) and writes
every output from that decision:

    OUT/gradebook.csv                 one row per learner (grader/gradebook.py)
    OUT/grades/<learner>.json         the grade with its reasons and audit trail
    OUT/review/<learner>.md           the counted files' code beside their checks
    OUT/gradescope/<learner>/results.json
    OUT/lms/canvas.csv, moodle.csv    with a roster (grader/lms.py)
    OUT/lms/grades_long.csv
    OUT/stats/index.html              histograms and failing checks (grader/stats.py)

It also turns grade-class's options (--assignment, --roster, --overrides,
--submitted-at, --select) into a `ClassRun`, checked before any grading starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from grader import escape
from grader.assignments import AssignmentError, load_assignment, native_points, whole_course
from grader.gradebook import grades_json, gradebook_csv
from grader.gradescope import learner_results
from grader.lms import canvas_csv, long_csv, moodle_csv
from grader.overrides import OverrideError, load_overrides
from grader.report import write_atomic
from grader.roster import RosterError, load_roster
from grader.standing import (STATUSES, ClassSetup, Standing, Submitted, at_assignment_points,
                             learner_keys, overrides_by_key, standings)
from grader.submission_times import TimesError, load_times, submitted_at

ASSIGNMENTS_FILE = "assignments.toml"


class SetupError(Exception):
    """An option or one of its files cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class ClassRun:
    setup: ClassSetup
    times: dict = field(default_factory=dict)  # file (relative to the submissions) -> submission time
    submissions: Path | None = None


def add_arguments(parser) -> None:
    parser.add_argument("--assignment", metavar="ID", help="grade against this assignment of assignments.toml "
                        "(default: the whole course, every lesson at its own points)")
    parser.add_argument("--assignments", type=Path, metavar="FILE",
                        help=f"the assignments file (default: {ASSIGNMENTS_FILE} in the course)")
    parser.add_argument("--roster", type=Path, metavar="CSV",
                        help="columns submission,student_id,name,email: who each file belongs to")
    parser.add_argument("--overrides", type=Path, metavar="CSV",
                        help="columns learner,exercise,points,reason: manual grades, kept with their reasons")
    parser.add_argument("--submitted-at", type=Path, metavar="CSV",
                        help="columns file,submitted_at: when each file was handed in (default: its mtime)")
    parser.add_argument("--select", choices=("latest", "best"),
                        help="several files for one lesson: which counts (default: the assignment's, else latest)")


def class_run(args, course_root: Path, raw_learners: list[str]) -> ClassRun:
    """grade-class's options as a ClassRun; every file is read and checked here, before grading."""
    try:
        native = native_points(Path(course_root))
        if args.assignment:
            path = args.assignments or Path(course_root) / ASSIGNMENTS_FILE
            assignment = load_assignment(path, args.assignment, native)
        elif args.assignments:
            raise SetupError("--assignments needs --assignment ID too (which of its assignments to grade)")
        else:
            assignment = whole_course(native)
        overrides = load_overrides(args.overrides) if args.overrides else []
        setup = ClassSetup(assignment.with_select(args.select),
                           load_roster(args.roster) if args.roster else None,
                           tuple(o for o in overrides if o.assignment in ("", assignment.id)))
        overrides_by_key(setup, learner_keys(raw_learners, setup.roster))
        times = load_times(args.submitted_at, assignment.timezone) if args.submitted_at else {}
    except (AssignmentError, RosterError, OverrideError, TimesError) as exc:
        raise SetupError(str(exc)) from None
    return ClassRun(setup, times, Path(args.submissions))


def _relative(path: Path, submissions: Path | None) -> str:
    if submissions is not None:
        for base, target in ((submissions, path), (submissions.resolve(), path.resolve())):
            try:
                return target.relative_to(base).as_posix()
            except ValueError:
                continue
    return path.name


def write_outputs(items, reports: dict, out: Path, run: ClassRun | None = None) -> list[str]:
    """Write every output from the standings; return lines for the terminal."""
    run = run or ClassRun(ClassSetup(whole_course(native_points(_course_root()))))
    assignment = run.setup.assignment
    submitted, item_of = [], {}
    for item in items:
        name = _relative(item.path, run.submissions)
        entry = Submitted(item.learner, name, reports[item], item.report_path(out).relative_to(out).as_posix(),
                          submitted_at(name, item.path, run.times))
        submitted.append(entry)
        item_of[(entry.learner, entry.name)] = item
    result = standings(submitted, run.setup)
    write_atomic(out / "gradebook.csv", gradebook_csv(result, assignment))
    for folder in ("grades", "review", "gradescope"):
        _remove_stale(out / folder, {s.key for s in result})
    for s in result:
        write_atomic(out / "grades" / f"{s.key}.json", grades_json(s, assignment))
        write_atomic(out / "review" / f"{s.key}.md", review_page(s, assignment, item_of))
        seconds = sum(f.report.get("execution_time", 0.0) for f in s.files)
        write_atomic(out / "gradescope" / s.key / "results.json",
                     json.dumps(learner_results(s, assignment, seconds), indent=2, allow_nan=False) + "\n")
    write_atomic(out / "lms" / "grades_long.csv", long_csv(result, assignment))
    lines = []
    if run.setup.roster:
        write_atomic(out / "lms" / "canvas.csv", canvas_csv(result, assignment))
        write_atomic(out / "lms" / "moodle.csv", moodle_csv(result, assignment))
        lines += _roster_lines(result)
    from grader.stats import write_stats
    write_stats(result, assignment, out / "stats")
    counts = {status: sum(s.status == status for s in result) for status in STATUSES}
    lines.append(f"{assignment.title}: {len(result)} learners, out of {assignment.max_total:g} points; "
                 + ", ".join(f"{n} {status}" for status, n in counts.items() if n) + ".")
    return lines


def _roster_lines(result: list[Standing]) -> list[str]:
    unmatched = [s.key for s in result if s.status == "not-on-roster"]
    absent = [s.key for s in result if s.status == "no-submission"]
    lines = []
    if unmatched:
        lines.append(f"{len(unmatched)} submission name(s) match no one on the roster (they are in the "
                     f"gradebook, not in lms/): {', '.join(escape.one_line(k) for k in unmatched)}")
    if absent:
        lines.append(f"{len(absent)} on the roster handed in nothing for this assignment (0 points): "
                     f"{', '.join(escape.one_line(k) for k in absent)}")
    return lines


def review_page(s: Standing, assignment, item_of: dict) -> str:
    """The review page of class_outputs, for the counted files at the assignment's points,
    under a summary of what counted and why."""
    from grader.class_outputs import review_page as checks_page

    md = escape.markdown_text
    who = f"{s.student.name} ({s.student.student_id}, {s.student.email})" if s.student else "not on the roster"
    summary = [f"**{md(assignment.title)}: {s.total:g} / {s.max_total:g}** ({s.status}); {md(who)}.", ""]
    changes = ([f"late penalty -{s.late_penalty:g}"] if s.late_penalty else []) + (
        [f"instructor adjustment {s.adjustment:+g}"] if s.adjustment else [])
    if changes:
        summary += ["Included: " + ", ".join(changes) + ".", ""]
    summary += [f"- {md(note)}" for note in s.notes] + [""]
    entries = []
    for part in s.lessons.values():
        if part.counted is not None:
            data = part.counted.report
            if data.get("status") == "graded":
                data = {**at_assignment_points(data, assignment).to_dict(),
                        "execution_time": data.get("execution_time", 0.0)}
            entries.append((item_of[(part.counted.learner, part.counted.name)], data))
    title, _, rest = checks_page(s.key, entries).partition("\n")
    return "\n".join([title, "", *summary, rest.lstrip("\n")])


def _remove_stale(folder: Path, keys: set[str]) -> None:
    """Outputs of learners no longer in the batch (a renamed folder, a roster change)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.is_file() and path.suffix in (".json", ".md") and path.stem not in keys:
            path.unlink()
        elif path.is_dir() and path.name not in keys and (path / "results.json").is_file():
            (path / "results.json").unlink()
            if not any(path.iterdir()):
                path.rmdir()


def _course_root() -> Path:
    from grader.config import COURSE_ROOT
    return COURSE_ROOT
