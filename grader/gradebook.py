"""The gradebook CSV and the per-learner grades file, both written from standings.

`gradebook.csv`: one row per learner, one column per exercise of the assignment
(its points there; blank when nothing was handed in for that lesson), then
`late_penalty`, `adjustment` (from `total` overrides), `total`, `max_total`,
`status` and `notes`. The exercise columns, minus the late penalty, plus the
adjustment, make the total.

`grades/<learner>.json`: the same grade with everything behind it: which file
counted for each lesson and why, its submission time and where that came from,
the due time and extension, the late penalty, every override with its reason
(the audit trail), and every file handed in.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

from grader import escape
from grader.assignments import Assignment
from grader.standing import Standing

LEARNER_COLUMNS = ("learner", "student_id", "name", "email")


def csv_number(value: float | None) -> str:
    return "" if value is None else f"{value + 0.0:g}"  # + 0.0: never "-0"


def csv_text(value: str) -> str:
    """Learner- or roster-derived text for a CSV cell: one line, never a formula."""
    return escape.csv_cell(escape.one_line(value))


def gradebook_csv(standings: list[Standing], assignment: Assignment) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    exercises = list(assignment.points)
    writer.writerow([*LEARNER_COLUMNS, *(f"{lesson}/{ex}" for lesson, ex in exercises),
                     "late_penalty", "adjustment", "total", "max_total", "status", "notes"])
    for s in standings:
        who = s.student
        writer.writerow([csv_text(s.key), csv_text(who.student_id if who else ""), csv_text(who.name if who else ""),
                         csv_text(who.email if who else ""), *(csv_number(s.exercises[k]) for k in exercises),
                         csv_number(s.late_penalty), csv_number(s.adjustment), csv_number(s.total),
                         csv_number(s.max_total), s.status, csv_text(" | ".join(s.notes))])
    return buffer.getvalue()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def grades_json(s: Standing, assignment: Assignment) -> str:
    data = {
        "learner": s.key,
        "student": None if s.student is None else {
            "student_id": s.student.student_id, "name": s.student.name, "email": s.student.email},
        "assignment": {"id": assignment.id, "title": assignment.title, "due": _iso(assignment.due),
                       "select": assignment.select, "timezone": assignment.timezone},
        "status": s.status,
        "total": s.total,
        "max_total": s.max_total,
        "late_penalty": s.late_penalty,
        "adjustment": s.adjustment,
        "exercises": [{"lesson": lesson, "exercise": ex, "points": s.exercises[(lesson, ex)],
                       "max_points": points} for (lesson, ex), (_, points) in assignment.points.items()],
        "lessons": {lesson: {
            "file": part.counted.name if part.counted else None,
            "report": part.counted.report_file if part.counted else None,
            "submitted_at": _iso(part.counted.submitted.time) if part.counted else None,
            "time_source": part.counted.submitted.source if part.counted else None,
            "due": _iso(part.due), "extension": part.extension or None,
            "days_late": part.lateness.days, "late_factor": part.lateness.factor,
            "earned": part.earned, "late_penalty": part.penalty, "why": part.note or "the only file",
        } for lesson, part in s.lessons.items()},
        "overrides": s.audit,
        "notes": s.notes,
        "files": [{"file": f.name, "lesson": f.report.get("lesson"), "status": f.report.get("status"),
                   "counted": any(p.counted is f for p in s.lessons.values()), "report": f.report_file,
                   "submitted_at": _iso(f.submitted.time), "time_source": f.submitted.source}
                  for f in s.files],
    }
    return json.dumps(data, indent=2, allow_nan=False) + "\n"
