"""What a class batch leaves for the instructor, rebuilt from the per-file reports:
`gradebook.csv`, a Gradescope `results.json` per learner, and a review page per
learner that shows each exercise's code beside its checks."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

from grader.report import write_atomic
from grader.results import Report


def _by_learner(items, reports) -> dict[str, list[tuple]]:
    grouped = defaultdict(list)
    for item in items:
        grouped[item.learner].append((item, reports[item]))
    return dict(sorted(grouped.items()))


def _columns(reports) -> list[tuple[str, str, float]]:
    """(lesson, exercise, max points) for every exercise any report graded, in course order."""
    seen: dict[tuple[str, str], float] = {}
    for data in sorted(reports.values(), key=lambda d: d["lesson"]):
        for exercise, (_, out_of) in Report.from_dict(data).by_exercise().items():
            seen[(data["lesson"], exercise)] = out_of
    return [(lesson, exercise, points) for (lesson, exercise), points in seen.items()]


def gradebook_csv(items, reports) -> str:
    columns = _columns(reports)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["learner", *(f"{lesson}/{exercise}" for lesson, exercise, _ in columns),
                     "total", "max_total", "status", "notes"])
    for learner, entries in _by_learner(items, reports).items():
        scores: dict[tuple[str, str], float] = {}
        notes, status = [], "graded"
        per_lesson = defaultdict(list)
        for item, data in entries:
            per_lesson[data["lesson"]].append((item, data))
        for lesson, submissions in per_lesson.items():
            item, data = submissions[-1]
            if len(submissions) > 1:
                notes.append(f"{len(submissions)} files for {lesson}; graded {item.path.name}")
            if data["status"] != "graded":
                status = "ungradable"
                notes.append(f"{item.path.name}: " + "; ".join(data["notices"]))
            for exercise, (got, _) in Report.from_dict(data).by_exercise().items():
                scores[(lesson, exercise)] = got
        row = [scores.get((lesson, exercise), "") for lesson, exercise, _ in columns]
        total = sum(v for v in scores.values())
        max_total = sum(points for *_, points in columns)
        writer.writerow([learner, *(_number(v) for v in row), _number(total), _number(max_total),
                         status, " | ".join(notes)])
    return buffer.getvalue()


def _number(value) -> str:
    return "" if value == "" else f"{value:g}"


def review_page(learner: str, entries) -> str:
    lines = [f"# Review: {learner}", ""]
    for item, data in entries:
        lines += [f"## {data['lesson']} — {data['score']:g} / {data['max_score']:g}",
                  f"File `{item.path.name}`, graded in {data.get('execution_time', 0):.2f} s.", ""]
        if data["status"] != "graded":
            lines += ["**Not graded:** " + "; ".join(data["notices"]), ""]
            continue
        code = data.get("code", {})
        for notice in data["notices"]:
            lines.append(f"> {notice}")
        report = Report.from_dict(data)
        for exercise, (got, out_of) in report.by_exercise().items():
            source = code.get(exercise) or "(no exercise cell was found)"
            lines += [f"### {exercise} — {got:g} / {out_of:g}", "", "```python", source.rstrip(), "```", "",
                      "| check | status | points | message |", "|---|---|---|---|"]
            for test in (t for t in report.tests if t.exercise == exercise):
                message = test.message.replace("|", "\\|").replace("\n", "<br>")
                lines.append(f"| {test.name.removeprefix('test_')} | {test.status} | "
                             f"{test.score:g}/{test.max_score:g} | {message} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def write_class_outputs(items, reports, out: Path, setup=None) -> list[str]:
    # Issue 11: one rule decides which file counts, and every output (this module's
    # review pages included) is written from that one decision in grader/classbook.py.
    from grader.classbook import write_outputs
    return write_outputs(items, reports, out, setup)
