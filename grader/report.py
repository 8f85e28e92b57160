"""Writing a report: the readable summary and the JSON file.

The summary goes to a terminal, and its messages, notices and file name carry
the learner's text: each line passes through `escape.terminal`, so an escape
sequence in an exception message is shown, never obeyed (it could otherwise
redraw the score, set the window title or write to the clipboard).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from grader.escape import terminal
from grader.results import Report

_MARK = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "timeout": "TIMEOUT",
         "memory": "MEMORY", "crashed": "CRASHED"}


def _points(x: float) -> str:
    return f"{x:g}"


def summary(report: Report, source: str = "") -> str:
    """A plain-text summary: the score, each exercise, each check and its message."""
    lines = [f"Lesson {terminal(report.lesson)}" + (f"  ({terminal(source)})" if source else ""),
             f"Score: {_points(report.score)} / {_points(report.max_score)}", ""]
    per_exercise = report.by_exercise()
    for exercise, (got, out_of) in per_exercise.items():
        lines.append(f"{terminal(exercise)}: {_points(got)} / {_points(out_of)}")
        for t in (t for t in report.tests if t.exercise == exercise):
            lines.append(f"  [{_MARK[t.status]:>7}] {t.name.removeprefix('test_')} "
                         f"({_points(t.score)}/{_points(t.max_score)})")
            if t.status != "passed" and t.message:
                lines.extend("            " + terminal(line) for line in t.message.splitlines())
    for notice in report.notices:
        lines.append(f"Note: {terminal(notice)}")
    return "\n".join(lines)


def write_json(report: Report, path: Path) -> None:
    write_atomic(Path(path), json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name stays short whatever the final one is (ENAMETOOLONG).
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:80]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
