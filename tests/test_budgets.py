"""A looping, sleeping or flooding submission costs a bounded time: one timeout per
exercise, never more than the submission's budget in all, and replies that decode
in bounded time and memory."""

import json
import time

import nbformat
import pytest

from conftest import SOLUTIONS
from grader import wire
from grader.config import GraderConfig
from grader.runner import check_points
from grader.grade import grade
from grader.sandbox import MAX_REPLY
from grading_fixtures import CORRECT, FIXTURES, Fixture, notebook_for, path_for
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


@pytest.mark.slow
def test_a_looping_function_pays_one_timeout_for_its_whole_exercise():
    timeout = 4.0
    looping = path_for(next(f for f in FIXTURES if f.name == "infinite-loop"))
    report, seconds = _timed(looping, check_timeout=timeout)
    mine = [t for t in report.tests if t.exercise == "scale_gradients"]
    assert len(mine) == 4 and all(t.status == "timeout" and t.score == 0 for t in mine)
    assert [FIRST in t.message and LATER not in t.message for t in mine].count(True) == 1
    assert all(LATER in t.message for t in mine[1:])
    points = check_points("03_loss_scaling")
    assert report.score == sum(points.values()) - points["scale_gradients"]  # the others as usual
    assert seconds < 4 * timeout - 1, f"{seconds:.1f} s: more than one timeout was paid"


@pytest.mark.slow
def test_a_lesson_04_scaler_whose_update_loops_pays_one_timeout(tmp_path):
    timeout = 3.0
    report, seconds = _timed(_looping_lesson_04(tmp_path), check_timeout=timeout)
    checks = len(report.tests)
    assert checks >= 8 and report.score == 0
    assert all(t.status == "timeout" for t in report.tests)
    assert [LATER not in t.message for t in report.tests].count(True) == 1
    assert seconds < checks * timeout - 6, f"{seconds:.1f} s for {checks} checks"


@pytest.mark.slow
def test_sleeping_just_under_each_limit_is_stopped_by_the_submission_budget(tmp_path):
    """Each exercise cell sleeps 2 s of its 2.5 s load limit: about 8 s and full marks
    without a budget; with a 5 s budget the last exercise gets no time at all."""
    sleeper = Fixture("sleeper", {name: "import time\ntime.sleep(2.0)\n" + source
                                  for name, source in CORRECT.items()}, {})
    path = tmp_path / "sleeper.ipynb"
    nbformat.write(notebook_for(sleeper), path)
    report, seconds = _timed(path, load_timeout=2.5, check_timeout=2.5, submission_budget=5.0)
    assert report.tests[0].status == "passed"  # sleeping is not wrong in itself
    assert report.score < sum(check_points("03_loss_scaling").values())
    spent = [t for t in report.tests if "used up its grading time" in t.message]
    assert spent and all(t.status == "timeout" and t.score == 0 for t in spent)
    assert all(t in spent for t in report.tests if t.exercise == "has_overflow")
    assert seconds < 5.0 + 3.5, f"{seconds:.1f} s against a 5 s budget"


def _message(text: bytes, attachments=()) -> bytes:
    parts = [len(text).to_bytes(8, "big"), text]
    for raw in attachments:
        parts += [len(raw).to_bytes(8, "big"), raw]
    return b"".join(parts)


def test_the_reply_cap_fits_the_largest_honest_reply_with_room_to_spare():
    honest = wire.dumps({"ok": [0.5] * 10**6})  # lesson 03's longest list, as a learner returns it
    assert 1.5 * len(honest) < MAX_REPLY < 4 * len(honest)
    assert wire.loads(honest)["ok"] == [0.5] * 10**6


@pytest.mark.parametrize("text, attachments, why", [
    (b"[" + b",".join([b"{}"] * 300_000) + b"]", (), "objects, arrays"),
    (b"{" + b",".join(b'"k%d":0' % i for i in range(250_000)) + b"}", (), "object members"),
    (b'"' + b"x" * (wire.MAX_JSON + 1) + b'"', (), "JSON part"),
    (json.dumps([{"$floats": {"at": 0}}] * 1000).encode(), (b"\0" * 8_000_000,), "referenced twice"),
    (b"0", (b"",) * 100_000, "too many attachments"),
])
def test_a_crafted_reply_is_refused_before_it_costs_time_or_memory(text, attachments, why):
    start = time.perf_counter()
    with pytest.raises(wire.WireError, match=why):
        wire.loads(_message(text, attachments))
    assert time.perf_counter() - start < 2


def test_two_million_plain_numbers_still_decode_as_data():
    """A wrong but plain answer (10^6 ints where floats belong) is graded, not refused."""
    text = b"[" + b",".join([b"7"] * 2_000_000) + b"]"
    assert wire.loads(_message(text)) == [7] * 2_000_000


@pytest.mark.slow
def test_a_flooding_reply_fails_its_check_and_grading_goes_on(tmp_path):
    """Over the size cap (3 M floats, 24 MB) or the structure cap (300 k objects): the
    check that got it fails, and every other check is graded as usual."""
    flood = Fixture("flood", {
        "scale_gradients": ("def scale_gradients(grads, scale):\n"
                            "    if len(grads) > 1000:\n        return [0.5] * 3_000_000\n"
                            "    return [float(g) * scale for g in grads]\n"),
        "unscale_gradients": ("def unscale_gradients(grads, scale):\n"
                              "    if len(grads) > 1000:\n        return [{} for _ in range(300_000)]\n"
                              "    return [float(g) / scale for g in grads]\n")}, {})
    path = tmp_path / "flood.ipynb"
    nbformat.write(notebook_for(flood), path)
    report = grade(path)
    crashed = [t for t in report.tests if t.status == "crashed"]
    assert sorted(t.exercise for t in crashed) == ["scale_gradients", "unscale_gradients"]
    assert all("a return value far larger than the answer" in t.message for t in crashed)
    assert "too large" in crashed[0].message and "objects, arrays" in crashed[1].message
    assert all(t.status == "passed" for t in report.tests if t not in crashed)
