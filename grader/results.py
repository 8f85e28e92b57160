"""The data of a grade: one result per hidden check, and the report around them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

STATUSES = ("passed", "failed", "error", "timeout", "memory", "crashed")


@dataclass
class CheckResult:
    name: str
    exercise: str
    score: float
    max_score: float
    status: str
    message: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")


@dataclass
class Report:
    lesson: str
    tests: list[CheckResult]
    notices: list[str] = field(default_factory=list)
    receipt: dict = field(default_factory=dict)
    status: str = "graded"  # or "ungradable": the file could not be read as a submission
    seconds: float = 0.0  # grading time: its own checks plus a share of the session's overhead
    code: dict = field(default_factory=dict)  # the learner's exercise cells as graded, for review

    @property
    def score(self) -> float:
        return round(sum(t.score for t in self.tests), 6)

    @property
    def max_score(self) -> float:
        return round(sum(t.max_score for t in self.tests), 6)

    def by_exercise(self) -> dict[str, tuple[float, float]]:
        totals: dict[str, tuple[float, float]] = {}
        for t in self.tests:
            got, out_of = totals.get(t.exercise, (0.0, 0.0))
            totals[t.exercise] = (got + t.score, out_of + t.max_score)
        return totals

    def to_dict(self) -> dict:
        return {"lesson": self.lesson, "score": self.score, "max_score": self.max_score,
                "status": self.status, "tests": [asdict(t) for t in self.tests],
                "notices": list(self.notices), "receipt": dict(self.receipt), "code": dict(self.code)}

    @classmethod
    def from_dict(cls, data: dict) -> "Report":
        return cls(lesson=data["lesson"], tests=[CheckResult(**t) for t in data["tests"]],
                   notices=list(data.get("notices", [])), receipt=dict(data.get("receipt", {})),
                   status=data.get("status", "graded"), code=dict(data.get("code", {})))
