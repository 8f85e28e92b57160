"""The review page a class batch leaves for each learner: each counted file's
exercise code beside its checks. The other outputs are written by
grader/classbook.py from one decision per learner (grader/standing.py).

Learner ids, file names, code and messages are the learner's own text: each
goes through `grader.escape` for Markdown, so none can become a heading, a
table row, a link or HTML.
"""

from __future__ import annotations

from pathlib import Path

from grader import escape
from grader.results import Report


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


def write_class_outputs(items, reports, out: Path, setup=None) -> list[str]:
    # One rule decides which file counts, and every output (these review pages
    # included) is written from that one decision.
    from grader.classbook import write_outputs
    return write_outputs(items, reports, out, setup)
