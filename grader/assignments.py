"""Assignments: what a homework counts, when it is due, and what lateness costs.

An instructor names each assignment once, in the course's `assignments.toml`:

    [defaults]
    timezone = "Europe/London"
    select = "latest"            # several files for one lesson: the latest counts ("best": the best)
    visibility = "after_due_date"
    late = { penalty_per_day = 0.1, grace_minutes = 15, max_days = 3 }

    [assignments.hw1]
    title = "Homework 1"
    due = 2026-03-06T23:59:00    # a local time, read in `timezone`
    lessons = ["03_loss_scaling"]                                   # every exercise, at its own points
    exercises = { "04_dynamic_loss_scaling/DynamicLossScaler" = 5 }  # one exercise, worth 5 here
    extensions = { s1002 = 2026-03-08T23:59:00, ada = 2 }           # a new due time, or days more

`max_total` is the assignment's own (the sum of its points), whatever a batch
holds. Without an assignment, the whole course counts, at every lesson's own points.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from grader.selection import RULES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with tomli (a dependency there)
    import tomli as tomllib

VISIBILITIES = ("visible", "after_due_date", "after_published", "hidden")
_ASSIGNMENT_KEYS = {"title", "lessons", "exercises", "due", "timezone", "late", "extensions", "select",
                    "visibility", "canvas_assignment_id"}
_DEFAULT_KEYS = {"timezone", "late", "select", "visibility"}
_LATE_KEYS = {"penalty_per_day", "grace_minutes", "max_days"}


class AssignmentError(Exception):
    """The assignments file says something impossible; the message says where and what to do."""


@dataclass(frozen=True)
class Lateness:
    days: int = 0
    factor: float = 1.0  # the share of the points that still counts
    late_by: timedelta | None = None

    def describe(self, policy: "LatePolicy") -> str:
        if self.late_by is None or self.late_by <= timedelta(0):
            return "on time"
        if self.days == 0:
            return f"{_duration(self.late_by)} late, within the {policy.grace_minutes:g}-minute grace period"
        if self.factor == 0.0 and policy.max_days is not None and self.days > policy.max_days:
            return f"{self.days} days late, more than the {policy.max_days} accepted: no points"
        return f"{self.days} day{'s' * (self.days != 1)} late: {1 - self.factor:.0%} off"


@dataclass(frozen=True)
class LatePolicy:
    penalty_per_day: float = 0.0  # share of the points earned, per started day after the due time
    grace_minutes: float = 0.0  # this late still counts as on time
    max_days: int | None = None  # later than this many days: no points

    def lateness(self, submitted: datetime | None, due: datetime | None) -> Lateness:
        """Days are counted from the due time itself; the grace period only decides
        whether a submission is late at all."""
        if submitted is None or due is None:
            return Lateness()
        late_by = submitted - due
        if late_by <= timedelta(minutes=self.grace_minutes):
            return Lateness(0, 1.0, late_by)
        days = math.ceil(late_by / timedelta(days=1))
        if self.max_days is not None and days > self.max_days:
            return Lateness(days, 0.0, late_by)
        return Lateness(days, max(0.0, 1.0 - self.penalty_per_day * days), late_by)


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    # (lesson, exercise) -> (the exercise's own points, its points in this assignment), in course order
    points: dict[tuple[str, str], tuple[float, float]]
    due: datetime | None = None
    late: LatePolicy = field(default_factory=LatePolicy)
    extensions: dict[str, datetime] = field(default_factory=dict)
    select: str = "latest"
    visibility: str = "visible"
    timezone: str = "UTC"
    canvas_assignment_id: str = ""

    @property
    def lessons(self) -> list[str]:
        return list(dict.fromkeys(lesson for lesson, _ in self.points))

    @property
    def max_total(self) -> float:
        return round(sum(points for _, points in self.points.values()), 2)

    def exercises_of(self, lesson: str) -> list[str]:
        return [exercise for (les, exercise) in self.points if les == lesson]

    def due_for(self, keys) -> tuple[datetime | None, str]:
        """The learner's due time, and the extension key that set it ('' for none)."""
        folded = {str(k).casefold() for k in keys if k}
        for key, due in self.extensions.items():
            if key.casefold() in folded:
                return due, key
        return self.due, ""

    def local(self, moment: datetime | None) -> str:
        """A time as the instructor reads it: in the assignment's time zone."""
        if moment is None:
            return "unknown"
        return moment.astimezone(ZoneInfo(self.timezone)).strftime("%Y-%m-%d %H:%M %Z")

    def with_select(self, rule: str | None) -> "Assignment":
        if rule is None:
            return self
        if rule not in RULES:
            raise AssignmentError(f"--select {rule!r}: use one of {', '.join(RULES)}")
        return replace(self, select=rule)


# -- the course's own points ---------------------------------------------------

@functools.cache
def native_points(course_root: Path) -> dict[str, dict[str, float]]:
    """Every official lesson's exercises, in notebook order, at the hidden checks' points."""
    from grader.config import GraderConfig
    from grader.grade import official_lessons
    from grader.notebook import Lesson
    from grader.runner import check_points, checks_file

    lessons = {}
    for lesson, path in official_lessons(GraderConfig(course_root=Path(course_root))).items():
        if checks_file(lesson).exists():
            points = check_points(lesson)
            lessons[lesson] = {ex: points.get(ex, 0.0) for ex in Lesson.from_notebook(path).exercises}
    return lessons


def whole_course(native: dict[str, dict[str, float]]) -> Assignment:
    points = {(lesson, ex): (p, p) for lesson, exercises in native.items() for ex, p in exercises.items()}
    return Assignment("course", "The whole course", points)


# -- reading assignments.toml ----------------------------------------------------

def load_assignment(path: Path, assignment_id: str, native: dict[str, dict[str, float]]) -> Assignment:
    assignments = load_assignments(path, native)
    if assignment_id not in assignments:
        raise AssignmentError(f"{path}: no assignment {assignment_id!r}; it names "
                              f"{', '.join(assignments) or 'none'}")
    return assignments[assignment_id]


def load_assignments(path: Path, native: dict[str, dict[str, float]]) -> dict[str, Assignment]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AssignmentError(f"{path}: no such file; write one (see assignments.toml in the course "
                              "root) or pass --assignments FILE") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AssignmentError(f"{path}: not a readable TOML file ({exc})") from None
    _unknown(data, {"defaults", "assignments"}, f"{path}")
    defaults = data.get("defaults", {})
    _unknown(defaults, _DEFAULT_KEYS, f"{path} [defaults]")
    tables = data.get("assignments", {})
    if not isinstance(tables, dict) or not tables:
        raise AssignmentError(f"{path}: no [assignments.<id>] tables")
    return {aid: _assignment(aid, table, defaults, native, f"{path} [assignments.{aid}]")
            for aid, table in tables.items()}


def _assignment(aid: str, table, defaults: dict, native, where: str) -> Assignment:
    if not isinstance(table, dict):
        raise AssignmentError(f"{where}: should be a table")
    _unknown(table, _ASSIGNMENT_KEYS, where)
    zone = str(table.get("timezone", defaults.get("timezone", "UTC")))
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise AssignmentError(f"{where}: unknown timezone {zone!r}; use an IANA name such as "
                              "'Europe/Berlin' or 'America/New_York' (on Windows: pip install tzdata)") from None
    points = _points(table, native, where)
    due = parse_time(table["due"], zone, f"{where} due") if "due" in table else None
    late = _late({**defaults.get("late", {}), **table.get("late", {})}, where)
    extensions = {}
    for key, value in table.get("extensions", {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if due is None:
                raise AssignmentError(f"{where}: extension {key!r} adds days, but there is no due time")
            extensions[str(key)] = due + timedelta(days=float(value))
        else:
            extensions[str(key)] = parse_time(value, zone, f"{where} extensions.{key}")
    select = str(table.get("select", defaults.get("select", "latest")))
    visibility = str(table.get("visibility", defaults.get("visibility", "visible")))
    if select not in RULES:
        raise AssignmentError(f"{where}: select = {select!r}; use one of {', '.join(RULES)}")
    if visibility not in VISIBILITIES:
        raise AssignmentError(f"{where}: visibility = {visibility!r}; use one of {', '.join(VISIBILITIES)}")
    return Assignment(aid, str(table.get("title", aid)), points, due, late, extensions, select, visibility,
                      zone, str(table.get("canvas_assignment_id", "")))


def _points(table: dict, native, where: str) -> dict[tuple[str, str], tuple[float, float]]:
    chosen: dict[tuple[str, str], tuple[float, float]] = {}
    for lesson in table.get("lessons", []):
        if lesson not in native:
            raise AssignmentError(f"{where}: lesson {lesson!r} is not in the course; known: {', '.join(native)}")
        chosen.update({(lesson, ex): (p, p) for ex, p in native[lesson].items()})
    for name, value in table.get("exercises", {}).items():
        lesson, _, exercise = str(name).partition("/")
        if exercise not in native.get(lesson, {}):
            known = ", ".join(f"{les}/{ex}" for les, exs in native.items() for ex in exs)
            raise AssignmentError(f"{where}: exercise {name!r} is not in the course; known: {known}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise AssignmentError(f"{where}: exercises.{name} should be a number of points (>= 0)")
        chosen[(lesson, exercise)] = (native[lesson][exercise], float(value))
    if not chosen:
        raise AssignmentError(f"{where}: names no lessons or exercises; add lessons = [...] or exercises = {{...}}")
    order = [(lesson, ex) for lesson, exercises in native.items() for ex in exercises]
    return {key: chosen[key] for key in order if key in chosen}


def _late(table: dict, where: str) -> LatePolicy:
    _unknown(table, _LATE_KEYS, f"{where} late")
    per_day = table.get("penalty_per_day", 0.0)
    grace = table.get("grace_minutes", 0.0)
    max_days = table.get("max_days")
    if not isinstance(per_day, (int, float)) or not 0 <= per_day <= 1:
        raise AssignmentError(f"{where}: late.penalty_per_day = {per_day!r}; give a share of the points "
                              "between 0 and 1 (0.1 takes 10% off per day)")
    if not isinstance(grace, (int, float)) or grace < 0:
        raise AssignmentError(f"{where}: late.grace_minutes should be a number of minutes (>= 0)")
    if max_days is not None and (isinstance(max_days, bool) or not isinstance(max_days, int) or max_days < 0):
        raise AssignmentError(f"{where}: late.max_days should be a whole number of days (>= 0)")
    return LatePolicy(float(per_day), float(grace), max_days)


def parse_time(value, zone: str, where: str) -> datetime:
    """A TOML datetime or an ISO 8601 string; a time without an offset is read in `zone`."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise AssignmentError(f"{where}: {value!r} is not a date and time; write it as "
                                  "2026-03-06T23:59:00 (or with an offset, 2026-03-06T23:59:00+01:00)") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        raise AssignmentError(f"{where}: {value} has no time of day; write {value}T23:59:00")
    if not isinstance(value, datetime):
        raise AssignmentError(f"{where}: {value!r} is not a date and time")
    return value.replace(tzinfo=ZoneInfo(zone)) if value.tzinfo is None else value.astimezone(timezone.utc)


def _unknown(table, known: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise AssignmentError(f"{where}: should be a table")
    extra = sorted(set(table) - known)
    if extra:
        raise AssignmentError(f"{where}: unknown key {extra[0]!r}; known keys: {', '.join(sorted(known))}")


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
