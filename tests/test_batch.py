"""grade-class: every learner gets a row, nothing is lost, and a killed batch completes."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import nbformat
import pytest

from conftest import NOTEBOOKS, ROOT, SOLUTIONS, lesson_ids, run_grader
from grader.gradescope import validate_results
from grader.runner import check_points
from grading_fixtures import path_for, FIXTURES

pytestmark = pytest.mark.slow
FIXTURE = {f.name: path_for(f) for f in FIXTURES}


def _edit_exercise(source_nb, name, change):
    nb = nbformat.read(source_nb, as_version=4)
    cells = [c for c in nb.cells if c.metadata.get("course", {}).get("exercise") == name
             and "exercise" in c.metadata.get("tags", [])]
    change(nb, cells[0])
    return nb


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    shutil.copy(SOLUTIONS / "03_loss_scaling.ipynb", root / "ada.ipynb")
    (root / "bob").mkdir()
    shutil.copy(SOLUTIONS / "03_loss_scaling.ipynb", root / "bob" / "03_loss_scaling.ipynb")
    shutil.copy(NOTEBOOKS / "04_dynamic_loss_scaling.ipynb", root / "bob" / "04_dynamic_loss_scaling.ipynb")
    (root / "cy.ipynb").write_text('{"cells": [')
    (root / "dee.ipynb").write_text(json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {},
                                                "worksheets": []}))
    (root / "eve.ipynb").write_text("")
    (root / "fay.ipynb").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff")

    def duplicate(nb, cell):
        copy = nbformat.from_dict(dict(cell))
        copy.id = "duplicate"
        nb.cells.insert(nb.cells.index(cell), copy)

    def to_markdown(nb, cell):
        md = nbformat.v4.new_markdown_cell(cell.source)
        md.metadata = cell.metadata
        nb.cells[nb.cells.index(cell)] = md

    nbformat.write(_edit_exercise(SOLUTIONS / "03_loss_scaling.ipynb", "scale_gradients", duplicate),
                   root / "gus.ipynb")
    nbformat.write(_edit_exercise(SOLUTIONS / "03_loss_scaling.ipynb", "has_overflow",
                                  lambda nb, cell: nb.cells.remove(cell)), root / "hal.ipynb")
    nbformat.write(_edit_exercise(SOLUTIONS / "03_loss_scaling.ipynb", "unscale_gradients", to_markdown),
                   root / "ivy.ipynb")
    shutil.copy(FIXTURE["os-exit"], root / "jon.ipynb")
    return root


@pytest.fixture(scope="module")
def graded(class_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    proc = run_grader("grade-class", str(class_folder), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def _gradebook(out):
    with open(out / "gradebook.csv", newline="") as f:
        return {row["learner"]: row for row in csv.DictReader(f)}


def test_every_learner_gets_one_row_with_a_clear_status(graded):
    out, _ = graded
    rows = _gradebook(out)
    assert sorted(rows) == ["ada", "bob", "cy", "dee", "eve", "fay", "gus", "hal", "ivy", "jon"]
    assert rows["ada"]["total"] == "20" and rows["ada"]["status"] == "graded"
    assert rows["bob"]["03_loss_scaling/scale_gradients"] == "4"
    assert rows["bob"]["04_dynamic_loss_scaling/DynamicLossScaler"] == "0"
    for learner, says in [("cy", "not valid JSON"), ("dee", "v3"), ("eve", "empty"), ("fay", "binary")]:
        assert rows[learner]["status"] == "ungradable" and says in rows[learner]["notes"]
    assert rows["gus"]["total"] == "20"
    assert rows["hal"]["03_loss_scaling/has_overflow"] == "0" and rows["hal"]["total"] == "17"
    assert rows["ivy"]["03_loss_scaling/unscale_gradients"] == "0"
    # A duplicated, deleted or markdown-ified exercise cell: its own status, and the notes say what happened.
    assert rows["gus"]["status"] == rows["hal"]["status"] == rows["ivy"]["status"] == "cells-changed"
    assert "found 2 exercise cells; graded the last one" in rows["gus"]["notes"]
    assert "no exercise cell for has_overflow was found" in rows["hal"]["notes"]
    assert "back to a code cell" in rows["ivy"]["notes"]
    course = sum(sum(check_points(lesson).values()) for lesson in lesson_ids())
    assert rows["ada"]["max_total"] == rows["bob"]["max_total"] == f"{course:g}"  # the course's, not the batch's
    assert rows["jon"]["03_loss_scaling/scale_gradients"] == "0" and rows["jon"]["total"] == "16"


def test_each_file_has_a_report_in_the_foundation_schema(graded, class_folder):
    out, _ = graded
    reports = sorted(p.relative_to(out / "reports").as_posix() for p in (out / "reports").rglob("*.json"))
    assert len(reports) == 11 and "bob/04_dynamic_loss_scaling.json" in reports
    ivy = json.loads((out / "reports" / "ivy" / "ivy.json").read_text())
    assert {"lesson", "score", "max_score", "tests", "receipt"} <= ivy.keys()
    assert any("back to a code cell" in t["message"] for t in ivy["tests"])
    gus = json.loads((out / "reports" / "gus" / "gus.json").read_text())
    assert any("graded the last one" in n for n in gus["notices"])


def test_gradescope_results_and_review_pages_for_every_learner(graded):
    out, _ = graded
    for learner in _gradebook(out):
        results = json.loads((out / "gradescope" / learner / "results.json").read_text())
        assert validate_results(results) == [], learner
        page = (out / "review" / f"{learner}.md").read_text()
        assert page.startswith(f"# Review: {learner}")
    ada = (out / "review" / "ada.md").read_text()
    assert "def scale_gradients" in ada and "| check | status | points | message |" in ada


def test_a_second_run_skips_unchanged_files_and_regrades_changed_ones(graded, class_folder):
    out, _ = graded
    proc = run_grader("grade-class", str(class_folder), "--out", str(out))
    assert "0 graded now, 11 unchanged" in proc.stdout
    shutil.copy(FIXTURE["wrong-sign"], class_folder / "ada.ipynb")
    proc = run_grader("grade-class", str(class_folder), "--out", str(out))
    assert "1 graded now, 10 unchanged" in proc.stdout
    assert _gradebook(out)["ada"]["total"] == "17"


def test_a_batch_killed_mid_run_completes_on_rerun_with_every_result_once(tmp_path):
    folder, out = tmp_path / "subs", tmp_path / "out"
    folder.mkdir()
    names = ["correct", "wrong-sign", "raises", "divides-instead-of-multiplies"]
    for i in range(12):
        shutil.copy(FIXTURE[names[i % len(names)]], folder / f"learner{i:02d}.ipynb")
    proc = subprocess.Popen([sys.executable, "-m", "grader", "grade-class", str(folder), "--out", str(out),
                             "--jobs", "2"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((out / "reports").glob("*/*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "reports").glob("*/*.json")))
    assert 0 < done_before < 12, "the kill should land mid-run"
    rerun = run_grader("grade-class", str(folder), "--out", str(out))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    reports = list((out / "reports").glob("*/*.json"))
    assert len(reports) == 12 and not list((out / "reports").glob("*/.*.tmp"))
    assert sorted(_gradebook(out)) == [f"learner{i:02d}" for i in range(12)]
    for path in reports:
        json.loads(path.read_text())  # every file whole


def test_regrade_reproduces_a_report_from_its_receipt(tmp_path):
    report = tmp_path / "r.json"
    submission = FIXTURE["wrong-sign"]
    assert run_grader("grade", str(submission), "--json", str(report), "--seed", "11").returncode == 0
    proc = run_grader("regrade", str(report), str(submission))
    assert proc.returncode == 0 and "Reproduced: identical result, 17 / 20 (seed 11)" in proc.stdout
    proc = run_grader("regrade", str(report), str(FIXTURE["correct"]))
    assert proc.returncode == 2 and "not the submission that was graded" in proc.stderr


def test_grade_class_refuses_bad_arguments(tmp_path):
    assert run_grader("grade-class", str(tmp_path / "nope"), "--out", str(tmp_path / "o")).returncode == 2
    (tmp_path / "subs").mkdir()
    proc = run_grader("grade-class", str(tmp_path / "subs"), "--out", str(tmp_path / "subs" / "out"))
    assert proc.returncode == 2 and "outside" in proc.stderr
