"""Manual overrides: an instructor's word on a grade, with a reason that stays on record.

A CSV with the header `learner,exercise,points,reason`, one override per row:

- `learner`: a submission name, a student id or an email from the roster;
- `exercise`: `lesson/exercise` (or the bare exercise name when it is unique in
  the assignment), or `total`;
- `points`: a number sets the points (`7`); a signed number adjusts them (`+2`, `-1.5`);
- `reason`: required: it is shown in the gradebook notes, the per-learner
  grades file, the review page and the learner's feedback;
- `assignment` (an optional fifth column): the assignment id the row is for, so
  one file can serve a whole course; a row without one applies to every assignment.

An exercise override replaces that exercise's autograded points before any
late penalty; a `total` override applies last, to the final total.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

HEADER = ("learner", "exercise", "points", "reason")
TOTAL = "total"


class OverrideError(Exception):
    """An override cannot be applied; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Override:
    where: str  # "overrides.csv, line 3", for the audit trail
    learner: str
    target: str  # "total", or "lesson/exercise" once resolved
    value: float
    relative: bool  # "+2" adjusts; "7" sets
    reason: str
    assignment: str = ""  # '' for every assignment

    def apply(self, before: float) -> float:
        return round(before + self.value if self.relative else self.value, 2)

    def describe(self) -> str:
        return f"{self.value:+g}" if self.relative else f"set to {self.value:g}"


def load_overrides(path: Path) -> list[Override]:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = tuple(h.strip() for h in reader.fieldnames or [])
            rows = list(reader)
    except OSError as exc:
        raise OverrideError(f"{path}: cannot be read ({exc.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise OverrideError(f"{path}: is not UTF-8 text; save it as CSV (UTF-8)") from None
    if header[:4] != HEADER or header[4:] not in ((), ("assignment",)):
        raise OverrideError(f"{path}: the header should be {','.join(HEADER)} (and optionally ,assignment)")
    overrides = []
    for line, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        where = f"{path.name}, line {line}"
        if not any(row.values()):
            continue
        points = row["points"]
        try:
            value = float(points)
        except ValueError:
            raise OverrideError(f"{where}: points {points!r} is not a number; write 7 to set, +2 or -1.5 "
                                "to adjust") from None
        relative = points.startswith(("+", "-"))
        if not relative and value < 0:
            raise OverrideError(f"{where}: points cannot be negative")
        if not row["learner"] or not row["exercise"]:
            raise OverrideError(f"{where}: learner and exercise are required")
        if not row["reason"]:
            raise OverrideError(f"{where}: give a reason; it is the audit trail for this change")
        overrides.append(Override(where, row["learner"], row["exercise"], value, relative, row["reason"],
                                  row.get("assignment", "")))
    return overrides


def resolve_target(override: Override, exercises: list[tuple[str, str]]) -> str:
    """`total` or `lesson/exercise`, checked against the assignment's exercises."""
    target = override.target
    if target.casefold() == TOTAL:
        return TOTAL
    if "/" in target:
        lesson, _, exercise = target.partition("/")
        if (lesson, exercise) in exercises:
            return target
    else:
        matches = [f"{les}/{ex}" for les, ex in exercises if ex == target]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise OverrideError(f"{override.where}: exercise {target!r} is in several lessons "
                                f"({', '.join(matches)}); write lesson/exercise")
    known = ", ".join(f"{les}/{ex}" for les, ex in exercises)
    raise OverrideError(f"{override.where}: {target!r} is not an exercise of this assignment; use "
                        f"total or one of: {known}")
