"""The instructor's tools around grading: Makefile targets, refresh, setup.sh, early refusals."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import zipfile

import nbformat
import pytest

from conftest import NOTEBOOKS, ROOT, SOLUTIONS, run_grader
from grader.classbook import SetupError, class_run
from grader.config import GraderConfig
from grader.grade import UnknownLesson, find_lesson
from grader.gradescope import build_autograder_zip
from grader.refresh import RefreshError, official_solution

MAKE = shutil.which("make")


def _phony_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    return re.search(r"^\.PHONY:(.*)$", text, re.M).group(1).split()


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
@pytest.mark.parametrize("target", _phony_targets())
def test_every_phony_make_target_has_a_rule(target):
    proc = subprocess.run([MAKE, "-n", "-B", target, "NB=submissions/dara.ipynb"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" not in proc.stdout + proc.stderr and proc.stdout.strip(), proc.stdout


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_grade_writes_its_report_outside_the_submissions_folder():
    proc = subprocess.run([MAKE, "-n", "grade", "NB=submissions/dara.ipynb"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    [command] = [line for line in proc.stdout.splitlines() if "grader grade" in line]
    assert '--json "graded/dara.report.json"' in command and "submissions/dara.report" not in command


def test_refresh_accepts_only_the_course_lessons_in_solutions(tmp_path):
    lesson = SOLUTIONS / "03_loss_scaling.ipynb"
    assert official_solution(lesson, ROOT) == lesson
    learner = tmp_path / "ada.ipynb"
    shutil.copy(lesson, learner)
    for path in (learner, NOTEBOOKS / "03_loss_scaling.ipynb", SOLUTIONS / ".." / "notebooks" / "03_loss_scaling.ipynb",
                 tmp_path / "solutions" / "03_loss_scaling.ipynb"):
        with pytest.raises(RefreshError, match="only re-runs the course's own lessons"):
            official_solution(path, ROOT)


def test_refresh_of_a_submission_is_refused_and_the_file_left_alone(tmp_path):
    learner = tmp_path / "ada.ipynb"
    shutil.copy(SOLUTIONS / "03_loss_scaling.ipynb", learner)
    before = learner.read_bytes()
    proc = run_grader("refresh", str(learner), timeout=120)
    assert proc.returncode == 2 and "python -m grader grade" in proc.stderr
    assert learner.read_bytes() == before


def test_setup_sh_stops_with_advice_on_a_python_older_than_3_10(tmp_path):
    with zipfile.ZipFile(build_autograder_zip(tmp_path / "a.zip", ROOT)) as zf:
        setup = zf.read("setup.sh").decode()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/bash\n"  # Ubuntu 20.04's python3, as far as setup.sh can tell
                                  'case "$1" in --version) echo "Python 3.8.10";; -m) exit 0;; *) exit 1;; esac\n')
    (fake / "python3").chmod(0o755)
    proc = subprocess.run(["/bin/bash", "-c", setup], env={"PATH": str(fake)}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert "needs Python 3.10 or newer" in proc.stderr and "Python 3.8.10" in proc.stderr
    assert "Ubuntu 22.04" in proc.stderr


def test_an_unknown_lesson_is_explained_without_advising_a_flag_grade_class_lacks(tmp_path):
    nb = nbformat.read(SOLUTIONS / "03_loss_scaling.ipynb", as_version=4)
    nb.metadata.pop("course", None)
    path = tmp_path / "homework.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(UnknownLesson) as info:
        find_lesson(nb, path, GraderConfig())
    assert "rename the file" in str(info.value) and "--lesson" not in str(info.value)
    proc = run_grader("grade", str(path), timeout=120)
    assert proc.returncode == 2 and "pass --lesson" in proc.stderr  # `grade` has the flag


def test_grade_class_refuses_a_bad_option_before_grading_anything(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    subs.mkdir()
    shutil.copy(SOLUTIONS / "03_loss_scaling.ipynb", subs / "ada.ipynb")
    (tmp_path / "o.csv").write_text("learner,exercise,points,reason\nnobody,total,3,because\n")
    proc = run_grader("grade-class", str(subs), "--out", str(out), "--overrides", str(tmp_path / "o.csv"),
                      timeout=300)
    assert proc.returncode == 2 and "no learner 'nobody'" in proc.stderr, proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("options, says", [
    ({"assignment": "hw404"}, "no assignment 'hw404'"),
    ({"assignments": "course.toml"}, "--assignments needs --assignment"),
    ({"roster": "nope.csv"}, "cannot be read"),
    ({"submitted_at": "nope.csv"}, "cannot be read"),
    ({"assignment": "hw1", "select": "first"}, "--select 'first'"),
])
def test_each_class_option_is_checked_with_a_clear_message(tmp_path, options, says):
    args = argparse.Namespace(**{"assignment": None, "assignments": None, "roster": None, "overrides": None,
                                 "submitted_at": None, "select": None, "submissions": tmp_path,
                                 **{k: (tmp_path / v if v.endswith((".csv", ".toml")) else v)
                                    for k, v in options.items()}})
    with pytest.raises(SetupError, match=re.escape(says)):
        class_run(args, ROOT, ["ada"])
