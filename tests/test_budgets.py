"""A looping or sleeping submission costs a bounded time: one timeout per exercise,
and never more than the submission's budget in all."""

import time

import nbformat
import pytest

from conftest import SOLUTIONS
from grader.config import GraderConfig
from grader.grade import grade
from grading_fixtures import CORRECT, FIXTURES, Fixture, notebook_for, path_for

pytestmark = pytest.mark.slow
FIRST = "did not finish within the time limit"
LATER = "remaining checks were not run"


def _timed(path, **config):
    start = time.perf_counter()
    report = grade(path, GraderConfig(**config))
    return report, time.perf_counter() - start


def _looping_lesson_04(tmp_path):
    nb = nbformat.read(SOLUTIONS / "04_dynamic_loss_scaling.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "exercise" in c.metadata.get("tags", []))
    doc = '"""Back off on found_inf, else count a clean update and grow when due."""'
    assert doc in cell.source
    cell.source = cell.source.replace(doc, doc + "\n        while True:\n            pass")
    path = tmp_path / "04_loops.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_looping_function_pays_one_timeout_for_its_whole_exercise():
    timeout = 4.0
    looping = path_for(next(f for f in FIXTURES if f.name == "infinite-loop"))
    report, seconds = _timed(looping, check_timeout=timeout)
    mine = [t for t in report.tests if t.exercise == "scale_gradients"]
    assert len(mine) == 4 and all(t.status == "timeout" and t.score == 0 for t in mine)
    assert [FIRST in t.message and LATER not in t.message for t in mine].count(True) == 1
    assert all(LATER in t.message for t in mine[1:])
    assert report.score == 6  # the other exercises are graded as usual
    assert seconds < 4 * timeout - 1, f"{seconds:.1f} s: more than one timeout was paid"


def test_a_lesson_04_scaler_whose_update_loops_pays_one_timeout(tmp_path):
    timeout = 3.0
    report, seconds = _timed(_looping_lesson_04(tmp_path), check_timeout=timeout)
    assert len(report.tests) == 8 and report.score == 0
    assert all(t.status == "timeout" for t in report.tests)
    assert [LATER not in t.message for t in report.tests].count(True) == 1
    assert seconds < 8 * timeout - 6, f"{seconds:.1f} s for 8 checks"


def test_sleeping_just_under_each_limit_is_stopped_by_the_submission_budget(tmp_path):
    """Each exercise cell sleeps 2 s of its 2.5 s load limit: about 8 s and full marks
    without a budget; with a 5 s budget the last exercise gets no time at all."""
    sleeper = Fixture("sleeper", {name: "import time\ntime.sleep(2.0)\n" + source
                                  for name, source in CORRECT.items()}, {})
    path = tmp_path / "sleeper.ipynb"
    nbformat.write(notebook_for(sleeper), path)
    report, seconds = _timed(path, load_timeout=2.5, check_timeout=2.5, submission_budget=5.0)
    assert report.tests[0].status == "passed"  # sleeping is not wrong in itself
    assert report.score < 10
    spent = [t for t in report.tests if "used up its grading time" in t.message]
    assert spent and all(t.status == "timeout" and t.score == 0 for t in spent)
    assert all(t in spent for t in report.tests if t.exercise == "has_overflow")
    assert seconds < 5.0 + 3.5, f"{seconds:.1f} s against a 5 s budget"
