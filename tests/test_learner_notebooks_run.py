"""Each learner notebook runs top to bottom; the only errors are the exercises' stubs.

nbval's lax mode cannot express "NotImplementedError from a stub is fine, any
other error is not", so this runs the notebooks with nbclient and inspects the
error outputs instead.
"""

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import NOTEBOOKS, lesson_ids
from grader.notebook import EXERCISE_TAG, SELF_CHECK_TAG, has_tag


@pytest.mark.slow
@pytest.mark.parametrize("lesson", lesson_ids())
def test_learner_notebook_runs_with_only_not_implemented_errors(lesson):
    nb = nbformat.read(NOTEBOOKS / f"{lesson}.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    for index, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            if output.output_type == "error":
                assert output.ename == "NotImplementedError", (
                    f"cell {index} raised {output.ename}: {output.evalue}")
        if has_tag(cell, SELF_CHECK_TAG):
            text = "".join(o.get("text", "") for o in cell.outputs)
            assert "not implemented yet" in text and "Traceback" not in text
        if has_tag(cell, EXERCISE_TAG):
            assert not any(o.output_type == "error" for o in cell.outputs), "defining a stub must not fail"
