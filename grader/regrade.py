"""Reproduce a grade from its receipt: same graded cells, same seed, same result."""

from __future__ import annotations

import json
from pathlib import Path

from grader import __version__
from grader.config import GraderConfig
from grader.grade import grade
from grader.notebook import NotebookError


class RegradeError(Exception):
    pass


def _load(report_path: Path) -> dict:
    try:
        data = json.loads(Path(report_path).read_text())
        data["receipt"]["submission_sha256"]
        return data
    except (OSError, ValueError, KeyError, TypeError):
        raise RegradeError(f"{report_path}: not a graded report with a receipt") from None


def regrade(report_path: Path, submission: Path) -> tuple[bool, list[str]]:
    """Grade `submission` again with the receipt's seed; say whether the result is the same."""
    old = _load(report_path)
    receipt = old["receipt"]
    try:
        new = grade(submission, GraderConfig(seed=int(receipt["seed"])), old["lesson"]).to_dict()
    except NotebookError as exc:
        raise RegradeError(str(exc)) from None
    lines = []
    if new["receipt"]["submission_sha256"] != receipt["submission_sha256"]:
        raise RegradeError(f"{submission}: its graded cells differ from the ones in {report_path} "
                           "(different sha256); this is not the submission that was graded")
    for key, now in (("grader_version", __version__), ("checks_sha256", new["receipt"]["checks_sha256"])):
        if receipt.get(key) != now:
            lines.append(f"warning: {key} was {receipt.get(key)}, now {now}")
    def outcome(report):
        return [(t["name"], t["status"], t["score"], t["message"]) for t in report["tests"]]
    same = outcome(old) == outcome(new)
    if same:
        lines.append(f"Reproduced: identical result, {new['score']:g} / {new['max_score']:g} "
                     f"(seed {receipt['seed']}).")
    else:
        lines.append("Not reproduced: the result differs.")
        for before, after in zip(outcome(old), outcome(new)):
            if before != after:
                lines.append(f"  {before[0]}: was {before[1]} {before[2]:g}, now {after[1]} {after[2]:g}")
    return same, lines
