"""One rule decides which file counts when a learner hands in several for one lesson.

- `latest` (the default): the latest submission time; equal times go to the
  better score, then to the last name in sort order.
- `best`: the best score (after its own late penalty); equal scores go to the
  later file, then to the last name.

A file that could be graded always beats one that could not (a corrupt
re-upload does not wipe out a good notebook); when none could be graded, the
same rule picks among the rest so the row still says why.

Every output (gradebook, per-learner grades, review pages, Gradescope results,
the Gradescope `run` path, feedback, statistics) takes its file from `choose`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

RULES = ("latest", "best")
_NEVER = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Candidate:
    name: str  # the file, as named in the submissions
    submitted: datetime | None
    time_source: str
    points: float  # what it counts for in the assignment, after its own late penalty
    gradable: bool = True


def choose(candidates: list[Candidate], rule: str, describe_time=str) -> tuple[Candidate, str]:
    """The file that counts, and a note saying which and why ('' when there was only one)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; use one of {RULES}")
    if not candidates:
        raise ValueError("choose() needs at least one candidate")
    pool = [c for c in candidates if c.gradable] or list(candidates)

    def when(c: Candidate) -> datetime:
        return c.submitted or _NEVER

    if rule == "latest":
        chosen = max(pool, key=lambda c: (when(c), c.points, c.name))
    else:
        chosen = max(pool, key=lambda c: (c.points, when(c), c.name))
    if len(candidates) == 1:
        return chosen, ""
    return chosen, _reason(chosen, candidates, pool, rule, describe_time)


def _reason(chosen: Candidate, candidates, pool, rule: str, describe_time) -> str:
    def facts(c: Candidate) -> str:
        if not c.gradable:
            return "could not be graded"
        return f"submitted {describe_time(c.submitted)} ({c.time_source}), {c.points:g} pts"

    if rule == "latest":
        tied = [c for c in pool if c.submitted == chosen.submitted]
        why = "the latest" if len(tied) == 1 else "submitted at the same time as another; the better score decides"
    else:
        tied = [c for c in pool if c.points == chosen.points]
        why = "the best score" if len(tied) == 1 else "the best score, tied; the later file decides"
    if chosen.gradable and len(pool) < len(candidates):
        why += "; files that could not be graded never beat one that could"
    others = "; ".join(f"{c.name}: {facts(c)}" for c in candidates if c is not chosen)
    return (f"{len(candidates)} files; counted {chosen.name} ({facts(chosen)}), rule '{rule}': {why}. "
            f"Not counted: {others}.")
