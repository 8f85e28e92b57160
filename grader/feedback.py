"""Feedback for learners: one self-contained HTML page each.

`python -m grader feedback OUT --to DIR` reads what grade-class left in OUT
(grades/<learner>.json and the reports of the files that counted) and writes
DIR/<learner>.html: the total, each exercise's points, each check's status and
message, the learner's own code, and any late penalty or instructor adjustment
with its reason. It holds nothing of the hidden checks (their messages are the
learner-facing ones, already scrubbed of the checks' source) and nothing of
other learners; every learner-derived string is escaped (grader/escape.py).
The page has no scripts and loads nothing: it can be mailed or uploaded as is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from grader import escape
from grader.report import write_atomic

_STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}"
          "pre{background:#f6f8fa;padding:.8em;overflow-x:auto}td pre{white-space:pre-wrap;word-break:break-word}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;"
          "vertical-align:top}.passed{color:#1a7f37}.failed,.error,.timeout,.memory,.crashed{color:#cf222e}")


class FeedbackError(Exception):
    """OUT does not hold grade-class results; the message says what to run first."""


def page_name(learner: str) -> str:
    """A safe file name for the learner's page."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", learner).lstrip(".") or "learner"


def write_feedback(out: Path, to: Path) -> list[Path]:
    out, to = Path(out), Path(to)
    grades = sorted((out / "grades").glob("*.json"))
    if not grades:
        raise FeedbackError(f"{out}: no grades/ folder with results; run grade-class with --out {out} first")
    written = []
    for path in grades:
        grade = json.loads(path.read_text(encoding="utf-8"))
        target = to / f"{page_name(grade['learner'])}.html"
        write_atomic(target, learner_page(grade, out))
        written.append(target)
    return written


def _report(out: Path, relative: str | None) -> dict | None:
    if not relative:
        return None
    try:
        return json.loads((out / relative).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def learner_page(grade: dict, out: Path) -> str:
    h = escape.html
    assignment = grade["assignment"]
    who = grade["student"]["name"] if grade.get("student") else grade["learner"]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{h(assignment['title'])}: feedback for {h(who)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{h(assignment['title'])}</h1>", f"<p>Feedback for <strong>{h(who)}</strong>.</p>",
             f"<p><strong>Total: {grade['total']:g} / {grade['max_total']:g}</strong></p>"]
    if grade["late_penalty"]:
        parts.append(f"<p>Late penalty: -{grade['late_penalty']:g} points.</p>")
    for change in grade["overrides"]:
        parts.append(f"<p>Adjusted by your instructor ({h(change['target'])}: {change['before']:g} &rarr; "
                     f"{change['after']:g}): {h(change['reason'])}</p>")
    by_lesson: dict[str, list[dict]] = {}
    for row in grade["exercises"]:
        by_lesson.setdefault(row["lesson"], []).append(row)
    for lesson, rows in by_lesson.items():
        part = grade["lessons"].get(lesson)
        parts.append(f"<h2>{h(lesson)}</h2>")
        if not part or not part["file"]:
            parts.append("<p>Nothing was handed in for this lesson.</p>")
            report = None
        else:
            parts.append(f"<p>Graded file: <code>{h(part['file'])}</code>"
                         + (f", {part['days_late']} day(s) late: -{part['late_penalty']:g} points"
                            if part["late_penalty"] else "") + ".</p>")
            report = _report(out, part["report"])
            if report and report.get("status") != "graded":
                parts.append(f"<p>This file could not be graded: {h('; '.join(report.get('notices', [])))}</p>")
        for row in rows:
            parts += _exercise(row, report)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _exercise(row: dict, report: dict | None) -> list[str]:
    h = escape.html
    points = "&ndash;" if row["points"] is None else f"{row['points']:g}"
    parts = [f"<h3>{h(row['exercise'])}: {points} / {row['max_points']:g}</h3>"]
    if not report or report.get("status") != "graded":
        return parts
    tests = [t for t in report.get("tests", []) if t["exercise"] == row["exercise"]]
    if tests:
        parts.append("<table><tr><th>check</th><th>result</th><th>message</th></tr>")
        for t in tests:
            parts.append(f"<tr><td>{h(t['name'].removeprefix('test_'))}</td>"
                         f"<td class='{h(t['status'])}'>{h(t['status'])}</td>"
                         f"<td><pre>{h(t['message'])}</pre></td></tr>")
        parts.append("</table>")
    code = report.get("code", {}).get(row["exercise"])
    parts.append("<p>Your code:</p>" + (f"<pre><code>{h(code)}</code></pre>" if code else
                                       "<p>(no exercise cell was found in your notebook)</p>"))
    return parts
