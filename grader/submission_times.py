"""When each file was handed in.

A file's modification time after unzipping an LMS download is whatever the zip
recorded (often when the archive was built or the file copied), not when the
learner submitted. So the time comes, in this order, from:

1. a `submitted_at` CSV the instructor exports from the LMS: columns `file`
   (the path inside the submissions folder, e.g. `ada/04_dynamic_loss_scaling.ipynb`)
   and `submitted_at` (ISO 8601; without an offset it is read in the assignment's
   time zone);
2. on Gradescope, the upload's `created_at` (submission_metadata.json);
3. the file's modification time, as a fallback the notes always name.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from grader.assignments import AssignmentError, parse_time


class TimesError(Exception):
    """The submitted_at CSV cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class SubmittedAt:
    time: datetime | None
    source: str  # where the time came from, for the notes


def load_times(path: Path, zone: str) -> dict[str, datetime]:
    """`file` -> `submitted_at`, keys as POSIX paths relative to the submissions folder."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except OSError as exc:
        raise TimesError(f"{path}: cannot be read ({exc.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise TimesError(f"{path}: is not UTF-8 text; save it as CSV (UTF-8)") from None
    if not rows or not {"file", "submitted_at"} <= set(header):
        raise TimesError(f"{path}: needs a header row with the columns file,submitted_at and one row per file")
    times = {}
    for line, row in enumerate(rows, start=2):
        name = (row.get("file") or "").strip().replace("\\", "/")
        if not name:
            raise TimesError(f"{path}, line {line}: the file column is empty")
        try:
            times[name] = parse_time(row.get("submitted_at") or "", zone, f"{path}, line {line}")
        except AssignmentError as exc:
            raise TimesError(str(exc)) from None
    return times


def submitted_at(name: str, path: Path, times: dict[str, datetime], source: str = "submitted_at CSV") -> SubmittedAt:
    """The time for the file `name` (relative to the submissions folder) found at `path`."""
    if name in times:
        return SubmittedAt(times[name], source)
    try:
        return SubmittedAt(datetime.fromtimestamp(Path(path).stat().st_mtime, timezone.utc),
                           "file modification time")
    except OSError:
        return SubmittedAt(None, "unknown")
