"""Every mechanism exercise's hidden checks catch plausible wrong answers.

Each file `tests/fixtures/wrong/<lesson>/<exercise>/<mistake>.py` is a whole
exercise cell carrying one mistake a learner could plausibly make. Its first
line is a comment that names the misconception (`# Mistake: ...`). The test
drops it into the lesson's solution in place of that exercise's cell, grades
every such submission in one `grade-class` batch, and requires:

- the exercise loses points, and every other exercise keeps full marks;
- at least one of its checks fails with a message that teaches: what was
  checked, expected against got, and a likely cause (a fixture whose mistake
  can only surface as a raise may say `# Expect: error` on its second line).

An exercise cell tagged as a mechanism (`metadata.course.mechanism: true`) must
have at least MIN_PER_MECHANISM such fixtures, and every lesson at least one
mechanism exercise.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, SOLUTIONS, lesson_ids, run_grader
from grader.notebook import EXERCISE_TAG, cell_exercise, has_tag

WRONG = ROOT / "tests" / "fixtures" / "wrong"
MIN_PER_MECHANISM = 5


def wrong_answers() -> list[Path]:
    return sorted(WRONG.glob("*/*/*.py"))


def _header(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[:2]


def _mechanisms(lesson: str) -> list[str]:
    nb = nbformat.read(SOLUTIONS / f"{lesson}.ipynb", as_version=4)
    return [cell_exercise(c) for c in nb.cells if has_tag(c, EXERCISE_TAG)
            and c.metadata.get("course", {}).get("mechanism") is True]


def _submission(path: Path) -> nbformat.NotebookNode:
    exercise, lesson = path.parent.name, path.parent.parent.name
    nb = nbformat.read(SOLUTIONS / f"{lesson}.ipynb", as_version=4)
    cells = [c for c in nb.cells if has_tag(c, EXERCISE_TAG) and cell_exercise(c) == exercise]
    assert len(cells) == 1, f"{path}: lesson {lesson} has no exercise cell named {exercise}"
    cells[0].source = path.read_text(encoding="utf-8")
    return nb


def _learners(answers: list[Path]) -> dict[Path, str]:
    # Short on purpose: the grader hashes learner ids longer than 64 bytes.
    return {path: f"{path.parent.parent.name[:2]}-{i:03d}" for i, path in enumerate(answers)}


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict[Path, dict]:
    answers = wrong_answers()
    if not answers:
        return {}
    folder, out = tmp_path_factory.mktemp("wrong"), tmp_path_factory.mktemp("graded")
    learners = _learners(answers)
    for path, learner in learners.items():
        nbformat.write(_submission(path), folder / f"{learner}.ipynb")
    proc = run_grader("grade-class", str(folder), "--out", str(out), "--timeout", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {path: json.loads(next((out / "reports" / learner).glob("*.json")).read_text())
            for path, learner in learners.items()}


@pytest.mark.parametrize("path", wrong_answers(), ids=lambda p: "/".join(p.parts[-3:]))
def test_a_wrong_answer_says_which_mistake_it_makes(path):
    first = _header(path)[0] if _header(path) else ""
    assert first.startswith("# Mistake: ") and len(first) > 20, (
        f"{path}: start with '# Mistake: <the misconception this answer carries>'")


@pytest.mark.slow
@pytest.mark.parametrize("path", wrong_answers(), ids=lambda p: "/".join(p.parts[-3:]))
def test_hidden_checks_catch_the_mistake_and_explain_it(path, graded):
    report, exercise = graded[path], path.parent.name
    assert report["status"] == "graded", report["notices"]
    totals: dict[str, list[float]] = {}
    for test in report["tests"]:
        got, out_of = totals.setdefault(test["exercise"], [0.0, 0.0])
        totals[test["exercise"]] = [got + test["score"], out_of + test["max_score"]]
    got, out_of = totals[exercise]
    assert got < out_of, f"{path.name} earned full marks on {exercise}"
    assert all(g == m for name, (g, m) in totals.items() if name != exercise), totals
    missed = [t for t in report["tests"] if t["exercise"] == exercise and t["status"] != "passed"]
    if "# Expect: error" in _header(path):
        assert any(t["status"] == "error" for t in missed)
    else:
        assert any(t["status"] == "failed" and all(w in t["message"] for w in
                                                   ("Expected:", "Got:", "Likely cause:"))
                   for t in missed), [t["message"] for t in missed]


@pytest.mark.parametrize("lesson", lesson_ids())
def test_every_mechanism_exercise_has_enough_wrong_answers(lesson):
    for exercise in _mechanisms(lesson):
        found = list((WRONG / lesson / exercise).glob("*.py"))
        assert len(found) >= MIN_PER_MECHANISM, (
            f"{lesson}/{exercise} is a mechanism exercise with {len(found)} wrong answers in "
            f"{WRONG.relative_to(ROOT)}/{lesson}/{exercise}/; it needs {MIN_PER_MECHANISM}")


@pytest.mark.parametrize("lesson", lesson_ids())
def test_every_lesson_has_a_mechanism_exercise(lesson):
    """Issue 12's bar: in every lesson the learner builds at least one mechanism."""
    assert _mechanisms(lesson), (f"{lesson} has no exercise cell tagged "
                                 "metadata.course.mechanism: true (docs/authoring.md)")
