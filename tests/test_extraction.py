"""Only the learner's exercise cells are graded; everything else comes from the lesson."""

import nbformat
from nbformat.v4 import new_code_cell

from conftest import NOTEBOOKS, SOLUTIONS
from grader.notebook import EXERCISE_TAG, SELF_CHECK_TAG, cell_exercise, has_tag

LESSON = "03_loss_scaling"


def _solution():
    return nbformat.read(SOLUTIONS / f"{LESSON}.ipynb", as_version=4)


def _exercise_cell(nb, name):
    return next(c for c in nb.cells if has_tag(c, EXERCISE_TAG) and cell_exercise(c) == name)


def _write(nb, tmp_path, name="submission.ipynb"):
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_edited_setup_deleted_checks_and_broken_demos_change_nothing(tmp_path, grade_json):
    nb = _solution()
    kept = []
    for cell in nb.cells:
        if has_tag(cell, SELF_CHECK_TAG):
            continue  # the learner deleted every self-check
        if cell.cell_type == "code" and not has_tag(cell, EXERCISE_TAG):
            cell.source = "import os\nos._exit(1)\nwhile True:\n    pass"  # setup and demos broken
        kept.append(cell)
    nb.cells = kept
    report = grade_json(_write(nb, tmp_path))
    assert report["score"] == report["max_score"] > 0


def test_a_duplicated_exercise_cell_grades_the_last_copy_and_says_so(tmp_path, grade_json):
    nb = _solution()
    cell = _exercise_cell(nb, "scale_gradients")
    wrong = nbformat.from_dict(dict(cell))
    wrong.source = "def scale_gradients(grads, scale):\n    return []\n"
    wrong.id = "copy-of-exercise"
    nb.cells.insert(nb.cells.index(cell), wrong)  # the wrong copy first, the right one last
    report = grade_json(_write(nb, tmp_path))
    assert report["score"] == report["max_score"]
    assert any("graded the last one" in n for n in report["notices"])


def test_an_exercise_cell_turned_into_markdown_says_how_to_fix_it(tmp_path, grade_json):
    nb = _solution()
    cell = _exercise_cell(nb, "has_overflow")
    index = nb.cells.index(cell)
    markdown = nbformat.v4.new_markdown_cell(cell.source)
    markdown.metadata = cell.metadata
    nb.cells[index] = markdown
    report = grade_json(_write(nb, tmp_path))
    mine = [t for t in report["tests"] if t["exercise"] == "has_overflow"]
    assert mine and all(t["score"] == 0 and t["status"] == "error" for t in mine)
    assert "back to a code cell" in mine[0]["message"]
    others = [t for t in report["tests"] if t["exercise"] != "has_overflow"]
    assert all(t["status"] == "passed" for t in others)


def test_a_missing_exercise_cell_is_reported_not_fatal(tmp_path, grade_json):
    nb = _solution()
    nb.cells.remove(_exercise_cell(nb, "unscale_gradients"))
    report = grade_json(_write(nb, tmp_path))
    mine = [t for t in report["tests"] if t["exercise"] == "unscale_gradients"]
    assert mine and all(t["status"] == "error" and "no exercise cell" in t["message"] for t in mine)
    assert report["score"] == report["max_score"] - sum(t["max_score"] for t in mine)


def test_lost_lesson_metadata_falls_back_to_the_file_name(tmp_path, grade_json):
    nb = nbformat.read(NOTEBOOKS / f"{LESSON}.ipynb", as_version=4)
    del nb.metadata["course"]
    report = grade_json(_write(nb, tmp_path, f"{LESSON}-ada.ipynb"))
    assert report["lesson"] == LESSON


def test_learner_helpers_outside_exercise_cells_are_not_graded(tmp_path, grade_json):
    nb = _solution()
    cell = _exercise_cell(nb, "scale_gradients")
    cell.source = "def scale_gradients(grads, scale):\n    return helper(grads, scale)\n"
    nb.cells.insert(0, new_code_cell("def helper(g, s):\n    return [x * s for x in g]"))
    report = grade_json(_write(nb, tmp_path))
    mine = [t for t in report["tests"] if t["exercise"] == "scale_gradients"]
    assert all(t["status"] == "error" for t in mine)
    assert "NameError" in mine[0]["message"]
