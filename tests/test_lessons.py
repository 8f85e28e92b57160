"""Every lesson follows the outline, and its two versions get the two reference grades."""

import json
import re
import shutil

import nbformat
import pytest

from conftest import NOTEBOOKS, SOLUTIONS, lesson_ids, run_grader
from grader.notebook import EXERCISE_TAG, SELF_CHECK_TAG, SUPPORT_TAG, cell_exercise, has_tag
from grader.runner import check_points, checks_file

HEADER = re.compile(r"^###\s+Exercise\s+[\d.]+\s+[—-]+\s+`?(\w+)`?\s+\((\d+(?:\.\d+)?)\s+pts?\)", re.M)


def _read(lesson, folder=SOLUTIONS):
    return nbformat.read(folder / f"{lesson}.ipynb", as_version=4)


@pytest.mark.parametrize("lesson", lesson_ids())
def test_lesson_follows_the_outline(lesson):
    nb = _read(lesson)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    for word in ("You will be able to", "Prerequisites", "Time"):
        assert word.lower() in first.source.lower(), f"title cell lacks {word!r}"
    setup = nb.cells[1]
    assert setup.cell_type == "code" and "torch.__version__" in setup.source
    assert any(has_tag(c, SUPPORT_TAG) for c in nb.cells)
    assert any(c.cell_type == "markdown" and c.source.startswith("## Summary") for c in nb.cells)
    assert any(o.get("data", {}).get("image/png") for c in nb.cells if c.cell_type == "code"
               for o in c.outputs), "a lesson needs at least one figure"


@pytest.mark.parametrize("lesson", lesson_ids())
def test_every_exercise_has_a_header_with_points_and_a_self_check_after_it(lesson):
    nb = _read(lesson)
    headers = {name: float(points) for c in nb.cells if c.cell_type == "markdown"
               for name, points in HEADER.findall(c.source)}
    exercises = [c for c in nb.cells if has_tag(c, EXERCISE_TAG)]
    assert exercises
    for cell in exercises:
        name = cell_exercise(cell)
        assert name in headers, f"no '### Exercise N.k — {name} (P pts)' header"
        following = nb.cells[nb.cells.index(cell) + 1:]
        next_code = next(c for c in following if c.cell_type == "code")
        assert has_tag(next_code, SELF_CHECK_TAG) and cell_exercise(next_code) == name
    assert checks_file(lesson).exists()
    assert check_points(lesson) == headers, "header points must equal the hidden checks' points"


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Every solution and every untouched learner notebook, graded in one class batch:
    ("solution" | "untouched", lesson) -> report."""
    folder, out = tmp_path_factory.mktemp("lessons"), tmp_path_factory.mktemp("graded")
    for who, source in (("solution", SOLUTIONS), ("untouched", NOTEBOOKS)):
        (folder / who).mkdir()
        for lesson in lesson_ids():
            shutil.copy(source / f"{lesson}.ipynb", folder / who / f"{lesson}.ipynb")
    proc = run_grader("grade-class", str(folder), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {(who, lesson): json.loads((out / "reports" / who / f"{lesson}.json").read_text())
            for who in ("solution", "untouched") for lesson in lesson_ids()}


@pytest.mark.slow
@pytest.mark.parametrize("lesson", lesson_ids())
def test_solution_gets_full_marks_and_learner_version_gets_zero(lesson, graded):
    solution = graded["solution", lesson]
    assert solution["score"] == solution["max_score"] > 0, [
        (t["name"], t["message"]) for t in solution["tests"] if t["status"] != "passed"]
    learner = graded["untouched", lesson]
    assert learner["score"] == 0 and learner["tests"]
    assert all("not implemented yet" in t["message"] for t in learner["tests"])
