"""Grades in the formats learning-management systems import, written from standings.

Canvas (`canvas.csv`), following Canvas's gradebook importer
(instructure/canvas-lms, app/models/gradebook_importer.rb: `row_has_student_headers?`,
`update_column_count`, `check_for_non_student_row`, `process_student`,
`parse_assignments`) and the instructor guide "How do I import grades in the
Gradebook?" (Canvas Community, Instructor Guide):

- the header row starts `Student,ID,SIS User ID,SIS Login ID,Section`; every later
  column is an assignment, matched by the `(id)` at the end of its title
  (`Homework 1 (12345)`), else by its exact title, else created as a new assignment;
- a row whose first cell holds `Points Possible` gives each assignment's points;
- a student is found by `ID` (Canvas user id), else `SIS User ID`, else
  `SIS Login ID`, else by name; blank cells are fine.

Moodle (`moodle.csv`), following MoodleDocs "Grade import" (CSV import: "Map from"
a user column to useremail / useridnumber / username, then map each grade
column to a grade item) and Moodle's gradeimport_csv (grade/import/csv/classes/
load_data.php: user mapping by `useremail`, `useridnumber`, `username` or
`userid`; a grade of '' or '-' means no grade). The columns are those of
Moodle's own grade export (`First name`, `Last name`, `ID number`,
`Email address`, then the grade item); its optional `Last downloaded from this
course` column is left out, because Moodle then insists on a recent export time.

Long format (`grades_long.csv`): one row per learner and exercise, plus
`late_penalty`, `adjustment` and `total` rows, for any other system or a spreadsheet.

Canvas and Moodle rows need the roster's ids, so learners not on the roster are
left out of them (the gradebook lists them); roster members without a submission
get 0.
"""

from __future__ import annotations

import csv
import io

from grader.assignments import Assignment
from grader.gradebook import csv_number, csv_text
from grader.standing import Standing

CANVAS_STUDENT_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
MOODLE_USER_COLUMNS = ("First name", "Last name", "ID number", "Email address")
LONG_COLUMNS = ("learner", "student_id", "name", "email", "assignment", "lesson", "exercise",
                "points", "max_points", "status")


def _writer() -> tuple[io.StringIO, csv.writer]:
    buffer = io.StringIO()
    return buffer, csv.writer(buffer)


def _enrolled(standings: list[Standing]) -> list[Standing]:
    return [s for s in standings if s.student is not None]


def canvas_csv(standings: list[Standing], assignment: Assignment) -> str:
    title = assignment.title + (f" ({assignment.canvas_assignment_id})" if assignment.canvas_assignment_id else "")
    buffer, writer = _writer()
    writer.writerow([*CANVAS_STUDENT_COLUMNS, csv_text(title)])
    writer.writerow(["Points Possible", "", "", "", "", csv_number(assignment.max_total)])
    for s in _enrolled(standings):
        who = s.student
        writer.writerow([csv_text(who.name), csv_text(who.canvas_user_id), csv_text(who.student_id),
                         csv_text(who.sis_login_id), csv_text(who.section), csv_number(s.total)])
    return buffer.getvalue()


def moodle_csv(standings: list[Standing], assignment: Assignment) -> str:
    buffer, writer = _writer()
    writer.writerow([*MOODLE_USER_COLUMNS, csv_text(assignment.title)])
    for s in _enrolled(standings):
        first, last = s.student.given_and_family()
        writer.writerow([csv_text(first), csv_text(last), csv_text(s.student.student_id), csv_text(s.student.email),
                         csv_number(s.total)])
    return buffer.getvalue()


def long_csv(standings: list[Standing], assignment: Assignment) -> str:
    buffer, writer = _writer()
    writer.writerow(LONG_COLUMNS)
    aid = csv_text(assignment.id)
    for s in standings:
        who = s.student
        person = [csv_text(s.key), csv_text(who.student_id if who else ""), csv_text(who.name if who else ""),
                  csv_text(who.email if who else ""), aid]
        for (lesson, ex), (_, points) in assignment.points.items():
            writer.writerow([*person, lesson, ex, csv_number(s.exercises[(lesson, ex)]), csv_number(points),
                             s.status])
        writer.writerow([*person, "", "late_penalty", csv_number(0.0 - s.late_penalty), "", s.status])
        writer.writerow([*person, "", "adjustment", csv_number(s.adjustment), "", s.status])
        writer.writerow([*person, "", "total", csv_number(s.total), csv_number(s.max_total), s.status])
    return buffer.getvalue()
