"""Writing a report: the readable summary and the JSON file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from grader.results import Report

_MARK = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "timeout": "TIMEOUT",
         "memory": "MEMORY", "crashed": "CRASHED"}


def _points(x: float) -> str:
    return f"{x:g}"


def summary(report: Report, source: str = "") -> str:
    """A plain-text summary: the score, each exercise, each check and its message."""
    lines = [f"Lesson {report.lesson}" + (f"  ({source})" if source else ""),
             f"Score: {_points(report.score)} / {_points(report.max_score)}", ""]
    per_exercise = report.by_exercise()
    for exercise, (got, out_of) in per_exercise.items():
        lines.append(f"{exercise}: {_points(got)} / {_points(out_of)}")
        for t in (t for t in report.tests if t.exercise == exercise):
            lines.append(f"  [{_MARK[t.status]:>7}] {t.name.removeprefix('test_')} "
                         f"({_points(t.score)}/{_points(t.max_score)})")
            if t.status != "passed" and t.message:
                lines.extend("            " + line for line in t.message.splitlines())
    for notice in report.notices:
        lines.append(f"Note: {notice}")
    return "\n".join(lines)


def write_json(report: Report, path: Path) -> None:
    write_atomic(Path(path), json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
