"""What a class batch leaves for the instructor, rebuilt from the per-file reports:
`gradebook.csv`, a Gradescope `results.json` per learner, and a review page per
learner that shows each exercise's code beside its checks.

Learner ids, file names, code and messages are the learner's own text: each
goes through `grader.escape` for its sink (a CSV cell, Markdown), so none can
become a formula, a heading, a table row, a link or HTML.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

from grader import escape
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
    writer.writerow(["learner", *(_cell(f"{lesson}/{exercise}") for lesson, exercise, _ in columns),
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
                notes.append(f"{len(submissions)} files for {lesson}; graded {item.file}")
            if data["status"] != "graded":
                status = "ungradable"
                notes.append(f"{item.file}: " + "; ".join(data["notices"]))
            for exercise, (got, _) in Report.from_dict(data).by_exercise().items():
                scores[(lesson, exercise)] = got
        row = [scores.get((lesson, exercise), "") for lesson, exercise, _ in columns]
        total = sum(v for v in scores.values())
        max_total = sum(points for *_, points in columns)
        writer.writerow([_cell(learner), *(_number(v) for v in row), _number(total), _number(max_total),
                         status, _cell(" | ".join(notes))])
    return buffer.getvalue()


def _cell(text: str) -> str:
    """A learner-derived CSV cell: one line, never a formula."""
    return escape.csv_cell(escape.one_line(text))


def _number(value) -> str:
    return "" if value == "" else f"{value:g}"


def review_page(learner: str, entries) -> str:
    md = escape.markdown_text
    lines = [f"# Review: {md(learner)}", ""]
    for item, data in entries:
        lines += [f"## {md(data['lesson'])} — {data['score']:g} / {data['max_score']:g}",
                  f"File {md(item.file)}, graded in {data.get('execution_time', 0):.2f} s.", ""]
        if data["status"] != "graded":
            lines += ["**Not graded:** " + md("; ".join(data["notices"])), ""]
            continue
        code = data.get("code", {})
        for notice in data["notices"]:
            lines.append(f"> {md(notice)}")
        report = Report.from_dict(data)
        for exercise, (got, out_of) in report.by_exercise().items():
            source = code.get(exercise) or "(no exercise cell was found)"
            lines += [f"### {md(exercise)} — {got:g} / {out_of:g}", "", escape.markdown_code(source), "",
                      "| check | status | points | message |", "|---|---|---|---|"]
            for test in (t for t in report.tests if t.exercise == exercise):
                lines.append(f"| {md(test.name.removeprefix('test_'))} | {md(test.status)} | "
                             f"{test.score:g}/{test.max_score:g} | {md(test.message)} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def write_class_outputs(items, reports, out: Path) -> None:
    from grader.gradescope import results_json

    write_atomic(out / "gradebook.csv", gradebook_csv(items, reports))
    for learner, entries in _by_learner(items, reports).items():
        graded = [Report.from_dict(d) for _, d in entries if d["status"] == "graded"]
        ungradable = [(item.file, "; ".join(d["notices"])) for item, d in entries
                      if d["status"] != "graded"]
        seconds = sum(d.get("execution_time", 0.0) for _, d in entries)
        results = results_json(graded, seconds, ungradable)
        write_atomic(out / "gradescope" / learner / "results.json", json.dumps(results, indent=2) + "\n")
        write_atomic(out / "review" / f"{learner}.md", review_page(learner, entries))
