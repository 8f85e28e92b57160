"""Class statistics, the page an instructor opens first after a deadline: OUT/stats/.

- a score histogram per exercise and one for the assignment's totals (matplotlib PNGs);
- the checks that failed most often, each with the counts of its "Likely cause" lines;
- every time-out, crash, memory blow-up and error, by check;
- `index.html`, one self-contained page (bar the PNGs beside it) showing it all.

Everything is counted over the files that count (the selection rule's choice),
from the same standings as the gradebook.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

from grader import escape
from grader.assignments import Assignment
from grader.report import write_atomic
from grader.standing import Standing

TROUBLE = ("timeout", "crashed", "memory", "error")
_CAUSE = re.compile(r"^Likely cause:\s*(.+)$", re.M)
_RAISED = re.compile(r"raised (\w+)")
_STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;"
          "text-align:left;vertical-align:top}figure{display:inline-block;margin:.5em}img{width:26em}")


def _histogram(values: list[float], max_points: float, title: str, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend, safe in any process

    fig = Figure(figsize=(5, 3.2), dpi=100)
    ax = fig.subplots()
    top = max([max_points, *values, 1e-9])  # overrides may give more than the maximum
    bins = max(1, min(10, math.ceil(top)))
    ax.hist(values, bins=bins, range=(0, top), color="#1f77b4", edgecolor="white")
    ax.set_xlabel("points")
    ax.set_ylabel("learners")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, top)
    fig.tight_layout()
    fig.savefig(path, format="png")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _counted_tests(standings: list[Standing], assignment: Assignment):
    """(learner, lesson, check) for every check of the counted files, within the assignment."""
    for s in standings:
        for lesson, part in s.lessons.items():
            if part.counted is None or part.counted.report.get("status") != "graded":
                continue
            for t in part.counted.report.get("tests", []):
                if (lesson, t["exercise"]) in assignment.points:
                    yield s.key, lesson, t


def _likely_cause(test: dict) -> str:
    """The check's own "Likely cause:" line; else what the learner's code raised; else its status."""
    message = test.get("message", "")
    found = _CAUSE.findall(message)
    if found:
        return found[0].strip()
    raised = _RAISED.search(message)
    if raised:
        return f"your code raised {raised.group(1)}"
    first = message.split("\n", 1)[0].split(";", 1)[0].strip()  # e.g. "the exercise cell ... is a markdown cell"
    return first[:100] or f"({test['status']})"


def write_stats(standings: list[Standing], assignment: Assignment, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    figures = []
    for (lesson, ex), (_, points) in assignment.points.items():
        values = [s.exercises[(lesson, ex)] for s in standings if s.exercises[(lesson, ex)] is not None]
        name = f"exercise_{_slug(lesson)}_{_slug(ex)}.png"
        _histogram(values, points, f"{lesson} / {ex}\n{len(values)} learners, out of {points:g}", folder / name)
        figures.append((name, f"{lesson}/{ex}"))
    handed_in = [s.total for s in standings if s.status != "no-submission"]
    name = f"assignment_{_slug(assignment.id)}.png"
    _histogram(handed_in, assignment.max_total,
               f"{assignment.title}: totals\n{len(handed_in)} learners, out of {assignment.max_total:g}",
               folder / name)
    figures.insert(0, (name, f"{assignment.title}: totals"))

    failing: Counter = Counter()
    causes: dict[tuple, Counter] = {}
    trouble: dict[tuple, Counter] = {}
    for learner, lesson, t in _counted_tests(standings, assignment):
        if t["status"] == "passed":
            continue
        key = (lesson, t["exercise"], t["name"])
        failing[key] += 1
        causes.setdefault(key, Counter())[_likely_cause(t)] += 1
        if t["status"] in TROUBLE:
            trouble.setdefault(key, Counter())[t["status"]] += 1
    path = folder / "index.html"
    write_atomic(path, _page(standings, assignment, figures, failing, causes, trouble))
    return path


def _page(standings, assignment, figures, failing, causes, trouble) -> str:
    h = escape.html
    totals = sorted(s.total for s in standings if s.status != "no-submission")
    missing = sum(1 for s in standings if s.status == "no-submission")
    ungradable = sum(1 for s in standings if s.status == "ungradable")
    median = (totals[(len(totals) - 1) // 2] + totals[len(totals) // 2]) / 2 if totals else 0.0
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>Class statistics: {h(assignment.title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>Class statistics: {h(assignment.title)}</h1>",
             f"<p>{len(totals)} learners handed in work; {missing} handed in nothing for this assignment; "
             f"{ungradable} have a file that could not be graded. Median total {median:g} of "
             f"{assignment.max_total:g}; mean {sum(totals) / len(totals) if totals else 0:.2f}.</p>",
             "<h2>Scores</h2>"]
    parts += [f"<figure><img src='{h(name)}' alt='{h(label)} histogram'><figcaption>{h(label)}"
              f"</figcaption></figure>" for name, label in figures]
    parts += ["<h2>Most common failing checks</h2>",
              "<table><tr><th>check</th><th>failed</th><th>likely causes (count)</th></tr>"]
    for (lesson, ex, name), count in failing.most_common(20):
        listed = "<br>".join(f"{h(cause)} ({n})" for cause, n in causes[(lesson, ex, name)].most_common())
        parts.append(f"<tr><td>{h(lesson)} / {h(ex)} / {h(name)}</td><td>{count}</td><td>{listed}</td></tr>")
    parts += ["</table>" if failing else "</table><p>No check failed.</p>",
              "<h2>Time-outs and crashes</h2>",
              "<table><tr><th>check</th>" + "".join(f"<th>{s}</th>" for s in TROUBLE) + "</tr>"]
    for (lesson, ex, name), counts in sorted(trouble.items()):
        parts.append(f"<tr><td>{h(lesson)} / {h(ex)} / {h(name)}</td>"
                     + "".join(f"<td>{counts.get(s, 0)}</td>" for s in TROUBLE) + "</tr>")
    parts.append("</table>" if trouble else "</table><p>No check timed out or crashed.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
