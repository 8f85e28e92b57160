"""What a class batch leaves for the instructor, rebuilt from the per-file reports.

The outputs themselves are written by grader/classbook.py from one decision per
learner (grader/standing.py); this module keeps the review page, which shows each
counted file's exercise code beside its checks."""

from __future__ import annotations

from pathlib import Path

from grader.results import Report


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
