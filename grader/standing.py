"""The one true total: for each learner, which file counts for each lesson, what each
exercise earns in the assignment, the late penalty, the overrides, and the total.

Every output is written from a `Standing` (gradebook, grades files, review pages,
Gradescope results, LMS exports, feedback, statistics, and the Gradescope `run`
path), so no two of them can disagree. Points are rounded to 2 decimals here,
once, and every output prints these same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from grader.assignments import Assignment, Lateness
from grader.overrides import TOTAL, Override, OverrideError, resolve_target
from grader.results import CheckResult, Report
from grader.roster import Roster, Student
from grader.selection import Candidate, choose
from grader.submission_times import SubmittedAt

STATUSES = {
    "graded": "every counted file was graded",
    "cells-changed": "graded, but an exercise cell was deleted, duplicated or is no longer code (see notes)",
    "ungradable": "a file could not be graded (see notes)",
    "no-submission": "handed in nothing for this assignment (0 points)",
    "not-on-roster": "files whose name matches no one on the roster",
}


@dataclass(frozen=True)
class Submitted:
    learner: str  # the raw learner id: the folder name, or the file's stem
    name: str  # the file, as named in the submissions folder
    report: dict  # its per-file report
    report_file: str = ""  # that report's path relative to the output folder
    submitted: SubmittedAt = SubmittedAt(None, "unknown")


@dataclass(frozen=True)
class ClassSetup:
    assignment: Assignment
    roster: Roster | None = None
    overrides: tuple[Override, ...] = ()


@dataclass
class LessonPart:
    lesson: str
    counted: Submitted | None  # None: no file for this lesson
    note: str = ""  # which file counted and why ('' when there was one)
    due: datetime | None = None
    extension: str = ""  # the extensions key that moved the due time
    lateness: Lateness = field(default_factory=Lateness)
    earned: float = 0.0  # its exercises' points, before the late penalty
    penalty: float = 0.0


@dataclass
class Standing:
    key: str  # the learner's name in every output (roster `submission`, or the raw name)
    student: Student | None
    status: str
    exercises: dict[tuple[str, str], float | None]  # None: nothing handed in for that lesson
    lessons: dict[str, LessonPart]
    late_penalty: float
    adjustment: float  # what `total` overrides changed
    total: float
    max_total: float
    notes: list[str]
    audit: list[dict]
    files: list[Submitted]


def _pts(x: float) -> float:
    return round(x, 2) + 0.0  # never -0.0


def exercise_points(report: dict, assignment: Assignment, lesson: str) -> dict[str, float]:
    """What each of the assignment's exercises earns from this file, at the assignment's points."""
    if report.get("status") != "graded":
        return {ex: 0.0 for ex in assignment.exercises_of(lesson)}
    got = Report.from_dict(report).by_exercise()
    points = {}
    for ex in assignment.exercises_of(lesson):
        earned, out_of = got.get(ex, (0.0, 0.0))
        points[ex] = _pts(earned / out_of * assignment.points[(lesson, ex)][1]) if out_of else 0.0
    return points


def at_assignment_points(report: dict, assignment: Assignment) -> Report:
    """A graded file's report, with only the assignment's exercises, each check scaled to
    the points its exercise is worth there (for Gradescope results and review pages)."""
    full = Report.from_dict(report)
    got = full.by_exercise()
    tests = []
    for t in full.tests:
        if (full.lesson, t.exercise) in assignment.points:
            out_of = got[t.exercise][1]
            factor = assignment.points[(full.lesson, t.exercise)][1] / out_of if out_of else 0.0
            tests.append(CheckResult(t.name, t.exercise, round(t.score * factor, 4),
                                     round(t.max_score * factor, 4), t.status, t.message))
    return Report(full.lesson, tests, list(full.notices), dict(full.receipt), full.status, full.seconds,
                  {ex: code for ex, code in full.code.items() if (full.lesson, ex) in assignment.points})


def learner_keys(raw_learners, roster: Roster | None) -> dict[str, Student | None]:
    """Each learner's key in the outputs: the roster's `submission` for a match, else the raw name;
    everyone on the roster is included."""
    keys: dict[str, Student | None] = {}
    for raw in raw_learners:
        student = roster.match(raw) if roster else None
        keys[student.submission if student else raw] = student
    for student in roster.students if roster else []:
        keys[student.submission] = student
    return keys


def standings(files: list[Submitted], setup: ClassSetup) -> list[Standing]:
    """One standing per learner: everyone with files, and everyone on the roster."""
    students = learner_keys([f.learner for f in files], setup.roster)
    groups: dict[str, list[Submitted]] = {key: [] for key in students}
    for f in files:
        student = setup.roster.match(f.learner) if setup.roster else None
        groups[student.submission if student else f.learner].append(f)
    overrides = overrides_by_key(setup, students)
    return [_standing(key, students[key], groups[key], setup, overrides.get(key, []))
            for key in sorted(groups, key=lambda k: (k.casefold(), k))]


def overrides_by_key(setup: ClassSetup, students: dict[str, Student | None]) -> dict[str, list[Override]]:
    exercises = list(setup.assignment.points)
    found: dict[str, list[Override]] = {}
    for override in setup.overrides:
        student = setup.roster.find(override.learner) if setup.roster else None
        key = student.submission if student else override.learner
        if key not in students:
            raise OverrideError(f"{override.where}: no learner {override.learner!r} (not on the roster and no "
                                "file by that name); use a submission name, student id or email")
        target = resolve_target(override, exercises)
        found.setdefault(key, []).append(replace(override, target=target))
    return found


def _standing(key: str, student: Student | None, files: list[Submitted], setup: ClassSetup,
              overrides: list[Override]) -> Standing:
    assignment = setup.assignment
    due, extension = assignment.due_for(student.keys if student else (key,))
    by_lesson, notes, problems = _by_lesson(files, assignment)
    exercises: dict[tuple[str, str], float | None] = {k: None for k in assignment.points}
    lessons: dict[str, LessonPart] = {}
    for lesson, candidates in by_lesson.items():
        part = lessons[lesson] = _counted(lesson, candidates, assignment, due, extension)
        for ex, points in exercise_points(part.counted.report, assignment, lesson).items():
            exercises[(lesson, ex)] = points
        notes += [f"{lesson}: {part.note}"] if part.note else []
        notes += _file_problems(part.counted, assignment, lesson, problems)
    audit = []
    for o in (o for o in overrides if o.target != TOTAL):
        lesson, _, ex = o.target.partition("/")
        before = exercises[(lesson, ex)] or 0.0
        exercises[(lesson, ex)] = o.apply(before)
        lessons.setdefault(lesson, LessonPart(lesson, None, due=due, extension=extension))
        audit.append(_audit(o, before, exercises[(lesson, ex)]))
    late_penalty = _late_penalties(lessons, exercises, assignment, notes)
    computed = _pts(sum(p.earned for p in lessons.values()) - late_penalty)
    total = computed
    for o in (o for o in overrides if o.target == TOTAL):
        before, total = total, o.apply(total)
        audit.append(_audit(o, before, total))
    notes += [f"override ({a['where']}): {a['target']} {a['before']:g} → {a['after']:g}: {a['reason']}"
              for a in audit]
    status = ("not-on-roster" if setup.roster and student is None else
              "ungradable" if problems["ungradable"] else
              "no-submission" if not by_lesson else
              "cells-changed" if problems["cells"] else "graded")
    if status == "not-on-roster":
        notes.insert(0, f"no roster entry matches {key!r}; add one (submission column) so this counts")
    return Standing(key, student, status, exercises, lessons, late_penalty, _pts(total - computed), total,
                    assignment.max_total, notes, audit, files)


def _by_lesson(files: list[Submitted], assignment: Assignment):
    """The files of each of the assignment's lessons; notes on the others."""
    by_lesson: dict[str, list[Submitted]] = {}
    notes: list[str] = []
    problems = {"ungradable": False, "cells": False}
    for f in sorted(files, key=lambda f: f.name):
        lesson = f.report.get("lesson", "unknown")
        if lesson in assignment.lessons:
            by_lesson.setdefault(lesson, []).append(f)
        elif f.report.get("status") != "graded":
            problems["ungradable"] = True
            notes.append(f"{f.name}: could not be graded: {'; '.join(f.report.get('notices', []))}")
        else:
            notes.append(f"{f.name}: {lesson} is not part of {assignment.id}; not counted")
    return by_lesson, notes, problems


def _late_penalties(lessons: dict[str, LessonPart], exercises, assignment: Assignment, notes: list[str]) -> float:
    """Each lesson's points and late penalty (set on its part); the penalties' sum."""
    total = 0.0
    for lesson, part in lessons.items():
        part.earned = _pts(sum(exercises[(lesson, ex)] or 0.0 for ex in assignment.exercises_of(lesson)))
        part.penalty = _pts(part.earned * (1 - part.lateness.factor))
        total = _pts(total + part.penalty)
        if part.penalty or part.lateness.days:
            when = part.counted.submitted
            notes.append(f"{lesson}: {part.counted.name} {part.lateness.describe(assignment.late)} "
                         f"(submitted {assignment.local(when.time)} per the {when.source}, due "
                         f"{assignment.local(part.due)}{_extension_note(part.extension)}): -{part.penalty:g} pts")
    return total


def _counted(lesson: str, files: list[Submitted], assignment: Assignment, due, extension) -> LessonPart:
    lateness = {f.name: assignment.late.lateness(f.submitted.time, due) for f in files}
    candidates = []
    for f in files:
        earned = sum(exercise_points(f.report, assignment, lesson).values())
        candidates.append(Candidate(f.name, f.submitted.time, f.submitted.source,
                                    _pts(earned * lateness[f.name].factor), f.report.get("status") == "graded"))
    chosen, note = choose(candidates, assignment.select, assignment.local)
    counted = next(f for f in files if f.name == chosen.name)
    return LessonPart(lesson, counted, note, due, extension, lateness[counted.name])


def _file_problems(f: Submitted, assignment: Assignment, lesson: str, problems: dict) -> list[str]:
    """What the instructor must know about the counted file: why it could not be graded,
    or which exercise cells were deleted, duplicated or turned into text."""
    data = f.report
    if data.get("status") != "graded":
        problems["ungradable"] = True
        return [f"{f.name}: could not be graded: {'; '.join(data.get('notices', []))}"]
    lines = [f"{f.name}: {notice}" for notice in data.get("notices", [])]
    code = data.get("code", {})
    for ex in assignment.exercises_of(lesson):
        if ex not in code:
            message = next((t["message"] for t in data.get("tests", []) if t["exercise"] == ex), "")
            lines.append(f"{f.name}: {ex}: {message or 'no exercise cell was found'}")
    problems["cells"] = problems["cells"] or bool(lines)
    return lines


def _audit(o: Override, before: float, after: float) -> dict:
    return {"where": o.where, "learner": o.learner, "target": o.target, "change": o.describe(),
            "before": before, "after": after, "reason": o.reason}


def _extension_note(key: str) -> str:
    return f", extended for {key}" if key else ""
