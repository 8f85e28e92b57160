"""Each hostile or broken submission gets exactly the grade it earned, and the
other exercises are still graded."""

import nbformat
import pytest

from grading_fixtures import FIXTURES, FULL, notebook_for, path_for

@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.name)
def test_fixture_file_is_current(fixture):
    """The committed fixture equals what tests/grading_fixtures.py builds."""
    assert path_for(fixture).read_text() == nbformat.writes(notebook_for(fixture)) + "\n", (
        "stale fixture: run `python tests/grading_fixtures.py`")


@pytest.mark.slow
@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.name)
def test_fixture_gets_the_grade_it_earned(fixture, grade_json):
    report = grade_json(path_for(fixture), "--timeout", str(fixture.timeout))
    scores = {}
    for test in report["tests"]:
        scores[test["exercise"]] = scores.get(test["exercise"], 0.0) + test["score"]
    expected = {**FULL, **fixture.scores}
    assert scores == expected
    assert report["score"] == sum(expected.values())
    replaced = set(fixture.replace) or {"scale_gradients"}
    statuses = {t["status"] for t in report["tests"] if t["exercise"] in replaced}
    assert fixture.statuses <= statuses
    messages = " ".join(t["message"] for t in report["tests"] if t["exercise"] in replaced)
    assert fixture.message in messages
    for test in report["tests"]:
        assert "def test_" not in test["message"] and "learner.map" not in test["message"]
