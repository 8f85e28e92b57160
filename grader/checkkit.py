"""The vocabulary of hidden checks: points, learner-facing failures, drawn examples.

A hidden check is a pytest test in `grader/checks/test_<lesson>.py`:

    @exercise("scale_gradients", points=2)
    def test_scaling_matches_reference_on_drawn_lists(learner, seed):
        cases = draw(gradient_lists(), n=200, seed=seed)
        outcomes = learner.map("scale_gradients", [(g, s) for g, s in cases])
        for (g, s), out in zip(cases, outcomes):
            expected = [x * s for x in g]
            if not out.ok or not same(out.value, expected):
                fail_case(...)

Its verdict is computed here, in the trusted process. A failure is raised as
`CheckFailed`, whose fields become the learner's message: what was checked, a
small case, expected against got, and a likely cause. The check's source is
never shown to the learner.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from grader.learner import LearnerRaised, Outcome
from grader.render import render
from grader.selfcheck.core import same

__all__ = ["exercise", "CheckFailed", "draw", "same", "same_floats", "fail_case", "render",
           "LearnerRaised", "Outcome", "call_text"]


def exercise(name: str, points: float):
    """Mark a check as worth `points` towards exercise `name`."""
    return pytest.mark.exercise(name=name, points=points)


class CheckFailed(AssertionError):
    """A learner-facing failure: every field is shown, nothing else is."""

    def __init__(self, checked: str, case: str = "", expected=None, got=None, cause: str = "",
                 show_values: bool = True):
        self.checked = checked
        self.case = case
        self.expected = expected
        self.got = got
        self.cause = cause
        self.show_values = show_values
        super().__init__(self.message())

    def message(self, scrub=lambda text: text) -> str:
        """The learner-facing text; `scrub` filters what the learner's code produced."""
        parts = [f"Checked: {self.checked}."]
        if self.case:
            parts.append(f"Case: {self.case}")
        if self.show_values:
            parts.append(f"Expected: {render(self.expected)}")
            parts.append(f"Got: {scrub(render(self.got))}")
        if self.cause:
            parts.append(f"Likely cause: {self.cause}")
        return "\n".join(parts)


def call_text(name: str, args: tuple) -> str:
    """A short rendering of a call such as `scale_gradients([1.0, …], 8.0)`."""
    return f"{name}(" + ", ".join(render(a, max_items=4) for a in args) + ")"


def fail_case(checked: str, name: str, args: tuple, expected, outcome: Outcome, cause: str):
    """Raise the failure for one call in a batch, whether it returned or raised."""
    if outcome.raised is not None:
        raise outcome.raised
    raise CheckFailed(checked, call_text(name, args), expected, outcome.value, cause)


def same_floats(expected: list, got, rel: float = 0.0) -> bool:
    """Lists of exactly-float items, equal element-wise (NaN equals NaN)."""
    if type(got) is not list or len(got) != len(expected):
        return False
    for e, g in zip(expected, got):
        if type(g) is not float:
            return False
        if math.isnan(e) or math.isnan(g):
            if not (math.isnan(e) and math.isnan(g)):
                return False
        elif not (e == g or (rel and math.isclose(e, g, rel_tol=rel))):
            return False
    return True


_drawn: dict[tuple, list] = {}


def draw(strategy, n: int, seed: int, key: str = "") -> list:
    """Draw `n` examples from a hypothesis strategy, reproducibly.

    Hypothesis picks the edge cases (zeros, subnormals, huge values, empty
    lists); drawing them up front lets a check send them all to the worker in
    one round trip, since round trips, not arithmetic, are the cost. Draws are
    cached per (key, seed, n), so a batch pays for them once.
    """
    cache_key = (key or repr(strategy), seed, n)
    if cache_key in _drawn:
        return _drawn[cache_key]
    examples: list = []

    @settings(max_examples=n, database=None, deadline=None, derandomize=False,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @hypothesis_seed(seed)
    @given(strategy)
    def collect(example):
        examples.append(example)

    collect()
    _drawn[cache_key] = examples
    return examples
