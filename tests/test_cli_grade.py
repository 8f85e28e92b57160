"""`python -m grader grade`: the report's shape, exit codes, and the two reference grades."""

import json

from conftest import NOTEBOOKS, SOLUTIONS, run_grader

LESSON = "03_loss_scaling"


def test_solution_gets_full_marks_with_the_documented_report(tmp_path):
    report_path = tmp_path / "r.json"
    proc = run_grader("grade", str(SOLUTIONS / f"{LESSON}.ipynb"), "--json", str(report_path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    assert {"lesson", "score", "max_score", "tests"} <= report.keys()
    assert report["lesson"] == LESSON and report["score"] == report["max_score"] == 20
    for test in report["tests"]:
        assert {"name", "exercise", "score", "max_score", "status", "message"} <= test.keys()
        assert test["status"] == "passed"
    assert {"submission_sha256", "grader_version", "checks_sha256", "seed", "python",
            "numpy", "torch", "platform"} <= report["receipt"].keys()
    assert "Score: 20 / 20" in proc.stdout


def test_untouched_learner_notebook_scores_zero_with_not_implemented(tmp_path):
    report_path = tmp_path / "r.json"
    proc = run_grader("grade", str(NOTEBOOKS / f"{LESSON}.ipynb"), "--json", str(report_path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_path.read_text())
    assert report["score"] == 0 and report["max_score"] == 20
    assert all("not implemented yet" in t["message"] for t in report["tests"])
    assert "Score: 0 / 20" in proc.stdout


def test_same_submission_and_seed_give_the_same_report(tmp_path):
    reports = []
    for i in range(2):
        path = tmp_path / f"r{i}.json"
        run_grader("grade", str(SOLUTIONS / f"{LESSON}.ipynb"), "--json", str(path), "--seed", "7")
        reports.append(json.loads(path.read_text()))
    assert reports[0] == reports[1] and reports[0]["receipt"]["seed"] == 7
