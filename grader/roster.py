"""The class roster: who is enrolled, and which submission files are theirs.

A CSV with a header row. Required columns:

- `submission`: the file or folder name the learner's work arrives under in the
  submissions folder (`ada` for `ada.ipynb` or `ada/`). LMS downloads prefix
  every file with the learner's name and an id (`ada_12345_...ipynb`), so a name
  that starts with `<submission>_` is theirs too; the longest match wins.
- `student_id`, `name`, `email`.

Optional, for the LMS exports: `first_name`, `last_name` (Moodle), `section`,
`sis_login_id` and `canvas_user_id` (Canvas).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, fields
from pathlib import Path

REQUIRED = ("submission", "student_id", "name", "email")
OPTIONAL = ("first_name", "last_name", "section", "sis_login_id", "canvas_user_id")


class RosterError(Exception):
    """The roster cannot be used; the message says where and what to do."""


@dataclass(frozen=True)
class Student:
    submission: str
    student_id: str
    name: str
    email: str
    first_name: str = ""
    last_name: str = ""
    section: str = ""
    sis_login_id: str = ""
    canvas_user_id: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        """What an override or an extension may call this student by."""
        return tuple(k for k in (self.submission, self.student_id, self.email) if k)

    def given_and_family(self) -> tuple[str, str]:
        """First and last name: the roster's own columns, else `name` split at its last space."""
        if self.first_name or self.last_name:
            return self.first_name, self.last_name
        given, _, family = self.name.rpartition(" ")
        return (given, family) if given else (family, "")


class Roster:
    def __init__(self, students: list[Student]):
        self.students = students
        self._by_key = {}
        for s in students:
            for key in s.keys:
                self._by_key.setdefault(key.casefold(), s)

    def match(self, name: str) -> Student | None:
        """The student a submission file or folder name belongs to."""
        folded = name.casefold()
        exact = [s for s in self.students if s.submission.casefold() == folded]
        if exact:
            return exact[0]
        prefixed = [s for s in self.students if folded.startswith(s.submission.casefold() + "_")]
        return max(prefixed, key=lambda s: len(s.submission), default=None)

    def find(self, key: str) -> Student | None:
        """A student by submission name, student id or email."""
        return self._by_key.get(key.strip().casefold())


def load_roster(path: Path) -> Roster:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = list(reader)
    except OSError as exc:
        raise RosterError(f"{path}: cannot be read ({exc.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise RosterError(f"{path}: is not UTF-8 text; save the roster as CSV (UTF-8)") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise RosterError(f"{path}: the header lacks {', '.join(missing)}; a roster needs the columns "
                          f"{','.join(REQUIRED)} (optional: {','.join(OPTIONAL)})")
    names = {f.name for f in fields(Student)}
    students, seen = [], {}
    for line, row in enumerate(rows, start=2):
        values = {k.strip(): (v or "").strip() for k, v in row.items() if k and k.strip() in names}
        student = Student(**values)
        if not student.submission:
            raise RosterError(f"{path}, line {line}: the submission column is empty")
        if any(ch in student.submission for ch in "/\\") or student.submission.startswith("."):
            raise RosterError(f"{path}, line {line}: submission {student.submission!r} should be a plain "
                              "file or folder name (no slashes, not starting with a dot)")
        for column in ("submission", "student_id", "email"):
            value = getattr(student, column).casefold()
            if value and (column, value) in seen:
                raise RosterError(f"{path}, line {line}: {column} {getattr(student, column)!r} is already "
                                  f"on line {seen[(column, value)]}; each must be unique")
            seen[(column, value)] = line
        students.append(student)
    if not students:
        raise RosterError(f"{path}: has a header but no students")
    return Roster(students)
