"""Gradescope: results.json follows the spec, and the autograder zip grades a submission."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

from conftest import FIXTURES, ROOT, SOLUTIONS
from grader import gradescope
from grader.gradescope import FAILED_MESSAGE, build_autograder_zip, results_json, validate_results
from grader.results import STATUSES, CheckResult, Report

LESSON = "03_loss_scaling"


def _report(lesson: str, rows: list[tuple[str, str, str]]) -> Report:
    tests = [CheckResult(name, exercise, 1.0 if status == "passed" else 0.0, 1.0, status,
                         f"message for {name}") for exercise, name, status in rows]
    return Report(lesson, tests, notices=["graded the last cell"], receipt={"seed": 1, "lesson": lesson})


def test_results_json_maps_every_status_and_numbers_each_check():
    first = _report(LESSON, [("scale", f"test_scale_{s}", s) for s in STATUSES[:3]]
                    + [("unscale", f"test_unscale_{s}", s) for s in STATUSES[3:]])
    second = _report("05_amp_training", [("train_step", "test_train_step_runs", "passed")])
    data = results_json([first, second], 12.4)
    assert validate_results(data) == []
    assert data["score"] == 2.0 and data["execution_time"] == 12
    assert data["output_format"] == "md" and data["stdout_visibility"] == "hidden"
    assert data["extra_data"]["receipts"] == {LESSON: first.receipt, "05_amp_training": second.receipt}
    tests = data["tests"]
    assert [t["number"] for t in tests] == ["3.1.1", "3.1.2", "3.1.3", "3.2.1", "3.2.2", "3.2.3", "5.1.1"]
    assert tests[0]["name"] == f"{LESSON} · scale · passed"
    for test, check in zip(tests, first.tests):
        assert test["status"] == ("passed" if check.status == "passed" else "failed")
        assert test["output"].startswith(f"**{check.status}**")  # our own word survives the mapping
        assert check.message in test["output"]
        assert test["visibility"] == "visible" and test["output_format"] == "md"
    assert "**03_loss_scaling**: 1 / 6" in data["output"] and "graded the last cell" in data["output"]
    hidden = results_json([first], 1.0, visibility="after_published")
    assert {t["visibility"] for t in hidden["tests"]} == {"after_published"}


def test_an_ungradable_file_is_one_failed_test_carrying_its_message():
    why = "notes.ipynb: is not a notebook (not valid JSON); re-download it from Jupyter."
    data = results_json([], 0.5, ungradable=[("notes.ipynb", why)])
    assert validate_results(data) == []
    [test] = data["tests"]
    assert (test["status"], test["score"]) == ("failed", 0.0)
    assert why in test["output"] and "notes.ipynb" in test["name"]
    assert data["score"] == 0


def test_a_message_full_of_backticks_cannot_break_out_of_its_block():
    report = _report(LESSON, [("scale", "test_scale", "failed")])
    report.tests[0].message = "got ```` and `x` and **bold**"
    output = results_json([report], 1.0)["tests"][0]["output"]
    assert "`````text\ngot ```` and `x` and **bold**\n`````" in output


def test_validate_results_catches_a_bad_status_a_missing_field_and_bad_types():
    good = results_json([_report(LESSON, [("scale", "test_scale", "passed")])], 1.0)
    assert validate_results(good) == []
    bad = json.loads(json.dumps(good))
    bad["tests"][0]["status"] = "timeout"
    del bad["tests"][0]["max_score"]
    bad["tests"][0]["visibility"] = "sometimes"
    bad["tests"][0]["number"] = 3.1
    bad["output_format"] = "latex"
    bad["score"] = True
    problems = "\n".join(validate_results(bad))
    for expected in ("tests[0].status", "missing 'max_score'", "tests[0].visibility",
                     "tests[0].number", "results.output_format", "results.score"):
        assert expected in problems
    assert validate_results({"tests": [], "score": float("nan")})
    problems = validate_results({"tests": [], "scroe": 1})
    assert problems[0] == "results: unknown field 'scroe'" and "no 'score'" in problems[1]


def test_an_empty_submission_still_gets_a_results_file(tmp_path):
    (tmp_path / "submission").mkdir()
    assert gradescope.run(tmp_path) == 0
    data = json.loads((tmp_path / "results/results.json").read_text())
    assert validate_results(data) == [] and data["score"] == 0
    assert "no notebook" in data["output"]


def test_a_broken_grader_still_writes_results_and_exits_nonzero(tmp_path, monkeypatch):
    import grader.grade

    def broken(*args, **kwargs):
        raise RuntimeError("hidden check exploded")

    monkeypatch.setattr(grader.grade, "grade", broken)
    (tmp_path / "submission").mkdir()
    shutil.copy(SOLUTIONS / f"{LESSON}.ipynb", tmp_path / "submission")
    assert gradescope.run(tmp_path) == 1
    data = json.loads((tmp_path / "results/results.json").read_text())
    assert validate_results(data) == []
    [test] = data["tests"]
    assert test["status"] == "failed"
    assert FAILED_MESSAGE in test["output"] and "RuntimeError" in test["output"]
    assert "exploded" not in test["output"]  # the details go to stdout, for the instructor


def test_the_zip_holds_the_scripts_and_the_course_but_no_bytecode(tmp_path):
    first = build_autograder_zip(tmp_path / "a.zip", ROOT)
    second = build_autograder_zip(tmp_path / "b.zip", ROOT)
    assert first.read_bytes() == second.read_bytes()  # reproducible: same course, same zip
    with zipfile.ZipFile(first) as zf:
        names = set(zf.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
        for script in ("setup.sh", "run_autograder"):
            assert modes[script] & 0o111
            check = subprocess.run(["bash", "-n"], input=zf.read(script), capture_output=True)
            assert check.returncode == 0, check.stderr
    # Gradescope extracts the zip to /autograder/source: the course sits at the zip's root.
    assert {"pyproject.toml", "constraints.txt", "README.md", f"notebooks/{LESSON}.ipynb",
            f"grader/checks/test_{LESSON}.py", "grader/checks/pytest.ini", "grader/gradescope.py"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") or n.startswith(("solutions", "source/"))
                   for n in names)


def test_run_autograder_grades_a_submission_end_to_end(tmp_path):
    """The zip, unpacked as Gradescope would, run with this venv's Python.

    On Gradescope setup.sh pip-installs source/; here PYTHONPATH points at the
    unpacked source instead (the sandboxed workers, started with `python -I`,
    import the grader this venv has installed).
    """
    root = tmp_path / "autograder"
    with zipfile.ZipFile(build_autograder_zip(tmp_path / "autograder.zip", ROOT)) as zf:
        zf.extractall(root / "source")  # where Gradescope puts it (docs/specs.md)
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    submission = root / "submission"
    (submission / "older").mkdir(parents=True)
    (root / "results").mkdir()
    shutil.copy(SOLUTIONS / f"{LESSON}.ipynb", submission)
    # A second file of the same lesson must not count twice. All files of one upload share
    # its time, so the selection rule (latest) falls back to the better score.
    shutil.copy(FIXTURES / "grading" / "raises.ipynb", submission / "older" / "attempt.ipynb")
    _spy(root, submission / "older" / "spy.ipynb")
    (submission / "notes.ipynb").write_text("not a notebook")
    (root / "submission_metadata.json").write_text(json.dumps(
        {"created_at": "2026-03-06T22:00:00.000000+01:00", "users": [{"email": "ada@example.edu"}]}))
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "PYTHON": sys.executable,
           "PYTHONPATH": str(root / "source")}
    proc = subprocess.run(["bash", str(root / "run_autograder")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((root / "results" / "results.json").read_text())
    assert validate_results(data) == []
    graded = [t for t in data["tests"] if t["name"].startswith(LESSON)]
    assert len(graded) == 18 and all(t["status"] == "passed" for t in graded), \
        [t["output"] for t in graded if t["status"] != "passed"]
    assert data["score"] == sum(t["max_score"] for t in graded) == 20
    [bad] = [t for t in data["tests"] if "notes.ipynb" in t["name"]]
    assert bad["status"] == "failed" and "not a notebook" in bad["output"]
    assert str(root) not in bad["output"]  # the learner sees their file's name, not our paths
    assert list(data["extra_data"]["receipts"]) == [LESSON]
    assert "3 files; counted" in data["output"] and "the better score decides" in data["output"]
    assert "graded older/attempt.ipynb: 03_loss_scaling 16/20" in proc.stdout
    if _isolated():  # the workers cannot see the course source, the uploads or the results
        assert "graded older/spy.ipynb: 03_loss_scaling 20/20" in proc.stdout, proc.stdout


def _isolated() -> bool:
    from grader.sandbox import in_force
    return in_force().holds_for_a_class


def _spy(root, path):
    """The lesson's solution, except that scale_gradients answers wrongly if it can see
    a file learner code must not read."""
    nb = json.loads((SOLUTIONS / f"{LESSON}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "exercise" in c["metadata"].get("tags", [])
                and c["metadata"]["course"]["exercise"] == "scale_gradients")
    private = [root / "source/grader/checks" / f"test_{LESSON}.py",
               root / "submission" / f"{LESSON}.ipynb", root / "results"]
    cell["source"] = (f"def scale_gradients(grads, scale):\n    import os\n"
                      f"    if any(os.path.exists(p) for p in {[str(p) for p in private]!r}):\n"
                      f"        return []\n    return [float(g) * scale for g in grads]\n")
    path.write_text(json.dumps(nb))
