"""notebooks/ is exactly what the generator makes from solutions/, and leaks nothing."""

import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from conftest import NOTEBOOKS, SOLUTIONS, lesson_ids
from grader.generate import generate, learner_version
from grader.markers import MarkerError, solution_only_lines
from grader.notebook import EXERCISE_TAG, cell_exercise, has_tag

REGION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)


def test_there_is_a_learner_notebook_for_every_solution_and_no_other():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(p.name for p in SOLUTIONS.glob("*.ipynb"))
    assert lesson_ids(), "no lessons found"


def test_committed_notebooks_are_what_the_generator_produces(tmp_path):
    generate(SOLUTIONS, tmp_path)
    for made in sorted(tmp_path.glob("*.ipynb")):
        committed = NOTEBOOKS / made.name
        assert committed.read_text() == made.read_text(), (
            f"{committed} is stale: run `make notebooks` (python -m grader generate)")


@pytest.mark.parametrize("lesson", lesson_ids())
def test_no_solution_text_leaks_into_the_learner_notebook(lesson):
    solution = nbformat.read(SOLUTIONS / f"{lesson}.ipynb", as_version=4)
    learner = nbformat.read(NOTEBOOKS / f"{lesson}.ipynb", as_version=4)
    text = "\n".join(cell.source for cell in learner.cells)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    secret = solution_only_lines(solution)
    assert any(REGION.search(c.source) for c in solution.cells), "a lesson without solution regions"
    leaked = sorted(line for line in secret if line in text)
    assert not leaked, f"solution lines leaked into {lesson}: {leaked}"


def test_a_line_only_in_a_solution_region_counts_as_secret_and_shared_lines_do_not():
    cell = new_code_cell("def f(s):\n    ### BEGIN SOLUTION\n    s.update_the_scale()\n"
                         "    return compute_the_answer(s)\n    ### END SOLUTION")
    demo = new_code_cell("s.update_the_scale()")
    assert solution_only_lines(new_notebook(cells=[cell, demo])) == {"return compute_the_answer(s)"}


@pytest.mark.parametrize("lesson", lesson_ids())
def test_learner_notebook_keeps_cells_tags_and_lesson_but_no_outputs(lesson):
    solution = nbformat.read(SOLUTIONS / f"{lesson}.ipynb", as_version=4)
    learner = nbformat.read(NOTEBOOKS / f"{lesson}.ipynb", as_version=4)
    assert learner.metadata["course"]["lesson"] == lesson == solution.metadata["course"]["lesson"]
    assert [c.id for c in learner.cells] == [c.id for c in solution.cells]
    assert [c.metadata.get("tags") for c in learner.cells] == [c.metadata.get("tags") for c in solution.cells]
    for cell in learner.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    stubs = [c for c in learner.cells if has_tag(c, EXERCISE_TAG)]
    assert stubs, "a lesson without exercises"
    for cell in stubs:
        assert f"{cell_exercise(cell)}')" in cell.source and "NotImplementedError(" in cell.source


def test_markers_outside_an_exercise_cell_are_refused():
    nb = new_notebook(cells=[new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")])
    with pytest.raises(MarkerError, match="only allowed in a cell tagged"):
        learner_version(nb, "99_demo.ipynb")


def test_unterminated_marker_names_the_notebook_and_cell():
    cell = new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n")
    cell.metadata = {"tags": ["exercise"], "course": {"exercise": "f"}}
    nb = new_notebook(cells=[new_code_cell("import math"), cell])
    with pytest.raises(MarkerError, match=r"solutions/99_demo.ipynb, cell 2, line 2: .* never closed"):
        learner_version(nb, "99_demo.ipynb")
