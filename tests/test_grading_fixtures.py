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


def test_no_report_message_quotes_the_hidden_checks(tmp_path):
    """Even a learner who reads the checks and returns or raises their text sees none of their code."""
    from conftest import grade_to_json
    from grader.runner import checks_file, scrub

    source = checks_file("03_loss_scaling").read_text()
    assert scrub(source[100:400]).startswith("<hidden")
    assert scrub("gradients are too small") == "gradients are too small"
    code_lines = [line.strip() for line in source.splitlines()
                  if len(line.strip()) > 20 and not line.strip().startswith(('"', "#", "'"))]
    for name in ("reads-files-next-to-the-submission", "raises"):
        fixture = next(f for f in FIXTURES if f.name == name)
        report = grade_to_json(path_for(fixture), tmp_path)
        for test in report["tests"]:
            assert not any(line in test["message"] for line in code_lines), test["message"]


def test_without_isolation_a_learner_reading_the_checks_still_sees_nothing_of_them():
    """Where workers can read the grader's files (not root), reports still do not echo them."""
    from grader.config import GraderConfig
    from grader.grade import grade
    from grader.runner import checks_file

    source = checks_file("03_loss_scaling").read_text()
    fixture = next(f for f in FIXTURES if f.name == "reads-files-next-to-the-submission")
    report = grade(path_for(fixture), GraderConfig(isolate=False))
    mine = [t for t in report.tests if t.exercise == "scale_gradients"]
    assert all(t.status == "error" and t.score == 0 for t in mine)
    assert all("<hidden" in t.message for t in mine)
    assert not any(source[i:i + 40] in t.message for t in mine for i in range(0, len(source) - 40, 7))
