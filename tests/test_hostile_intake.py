"""A submissions folder as an LMS export or an unpacked archive can leave it: links,
FIFOs, devices, huge files, odd names. Each gets a row, none is followed or read,
and the batch always ends."""

import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import unicodedata

import nbformat
import pytest

from conftest import NOTEBOOKS, ROOT, SOLUTIONS, run_grader
from grader.batch import discover
from grader.intake import MAX_NAME_BYTES, read_regular, safe_name
from grader.notebook import NotebookError, read_notebook
from grader.runner import check_points

LESSON = "03_loss_scaling.ipynb"
LONG = "l" * 240
NFC, NFD = unicodedata.normalize("NFC", "josé"), unicodedata.normalize("NFD", "josé")

posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symlinks")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe uses a subreaper")


def _folder(root):
    """Every hostile entry of the issue, next to honest ones."""
    subs = root / "subs"
    subs.mkdir()
    shutil.copy(SOLUTIONS / LESSON, subs / "alice.ipynb")
    (subs / "sybil").mkdir()
    os.symlink(SOLUTIONS / LESSON, subs / "sybil" / LESSON)  # the official solution
    os.symlink(subs / "alice.ipynb", subs / "zed.ipynb")  # another learner's work
    (subs / "mallory").mkdir()
    os.symlink("/dev/zero", subs / "mallory" / LESSON)
    os.mkfifo(subs / "mallory" / "04_dynamic_loss_scaling.ipynb")
    os.mkfifo(subs / "pipe.ipynb")
    os.symlink("/dev/zero", subs / "zero.ipynb")
    with open(subs / "huge.ipynb", "wb") as f:
        f.truncate(21 * 2**20)  # sparse: 21 MB on paper, nothing on disk
    shutil.copy(SOLUTIONS / LESSON, subs / "carol.ipynb")
    (subs / "carol.pdf").write_bytes(b"%PDF-1.4 not a notebook")
    shutil.copy(SOLUTIONS / LESSON, subs / f"{NFC}.ipynb")
    if not (subs / f"{NFD}.ipynb").exists():  # some filesystems normalise names themselves
        shutil.copy(NOTEBOOKS / LESSON, subs / f"{NFD}.ipynb")
    shutil.copy(NOTEBOOKS / LESSON, subs / f"{LONG}.ipynb")
    shutil.copy(NOTEBOOKS / LESSON, subs / "eve\n# Review: alice 10 of 10.ipynb")
    shutil.copy(NOTEBOOKS / LESSON, subs / "=HYPERLINK(\"http:evil\",\"10 of 10\").ipynb")
    return subs


@posix_only
def test_every_entry_is_judged_by_lstat_and_refused_unless_a_regular_file(tmp_path):
    items = {(item.learner, item.path.name): item for item in discover(_folder(tmp_path))}
    refused = {key: item.problem for key, item in items.items() if item.problem}
    assert "symbolic link" in refused[("sybil", LESSON)]
    assert "symbolic link" in refused[("zed", "zed.ipynb")]
    assert "symbolic link" in refused[("mallory", LESSON)]
    assert "named pipe" in refused[("mallory", "04_dynamic_loss_scaling.ipynb")]
    assert "named pipe" in refused[("pipe", "pipe.ipynb")]
    assert "symbolic link" in refused[("zero", "zero.ipynb")]
    assert "over the 20 MB limit" in refused[("huge", "huge.ipynb")]
    assert not items[("alice", "alice.ipynb")].problem and not items[("carol", "carol.pdf")].problem


@posix_only
def test_ids_and_report_names_are_safe_short_and_collision_free(tmp_path):
    items = discover(_folder(tmp_path))
    paths = [item.report_path(tmp_path / "out") for item in items]
    assert len({str(p).casefold() for p in paths}) == len(items)
    carol = sorted(item.report_path(tmp_path).name for item in items if item.learner == "carol")
    assert len(carol) == 2 and "carol.json" in carol  # the notebook keeps the plain name
    assert {item.learner for item in items if unicodedata.normalize("NFC", item.learner) == NFC} == {NFC}
    for item in items:
        for part in (item.learner, item.report_path(tmp_path).name):
            assert len(part.encode()) <= MAX_NAME_BYTES + len(".json")
            assert part == unicodedata.normalize("NFC", part) and part.isprintable()
            assert not part.startswith(".") and "/" not in part
    assert discover(tmp_path / "subs") == items  # stable: the same names on every run


def test_safe_names_keep_long_ids_apart_with_a_stable_hash():
    a, b = safe_name("x" * 240 + "a"), safe_name("x" * 240 + "b")
    assert a != b and a == safe_name("x" * 240 + "a") and len(a.encode()) <= MAX_NAME_BYTES
    assert safe_name("..") == "_.." and safe_name("a\x1b[2Jb") == "a_[2Jb"
    assert safe_name(NFD) == NFC


@posix_only
def test_reading_a_fifo_or_device_fails_at_once_instead_of_blocking(tmp_path):
    fifo = tmp_path / "x.ipynb"
    os.mkfifo(fifo)
    link = tmp_path / "zero.ipynb"
    os.symlink("/dev/zero", link)
    for path in (fifo, link, "/dev/zero"):
        result = []
        thread = threading.Thread(target=lambda: result.append(_refusal(path)), daemon=True)
        thread.start()
        thread.join(5)
        assert result and result[0], f"reading {path} blocked or succeeded"


def _refusal(path):
    try:
        read_notebook(path, outputs=False)
    except NotebookError as exc:
        return str(exc)
    return None


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.ipynb"
    with open(path, "wb") as f:
        f.truncate(3 * 2**20)
    with pytest.raises(OSError, match="over the 2 MB limit"):
        read_regular(path, 2 * 2**20)


def test_deeply_nested_json_is_a_clear_error_not_a_recursion_traceback(tmp_path):
    path = tmp_path / "deep.ipynb"
    for depth in (100, 100_000):
        path.write_text('{"nbformat": 4, "cells": [], "metadata": {"x": ' + "[" * depth + "]" * depth + "}}")
        with pytest.raises(NotebookError, match="nested more than"):
            read_notebook(path, outputs=False)
    proc = run_grader("grade", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "nested" in proc.stderr


@pytest.mark.parametrize("count", [400_000, 2_500_000])
def test_a_notebook_of_millions_of_empty_objects_is_refused_in_about_a_second(tmp_path, count):
    """A 21 MB `[{},{},…]` once cost 23 s and 4 GB; the bounds refuse it before nbformat sees it."""
    path = tmp_path / "bomb.ipynb"
    path.write_text('{"nbformat": 4, "nbformat_minor": 5, "metadata": {"junk": ['
                    + ",".join(["{}"] * count) + ']}, "cells": []}')
    start = time.perf_counter()
    with pytest.raises(NotebookError, match="JSON values"):
        read_notebook(path, outputs=False)
    assert time.perf_counter() - start < 10  # about 1 s; generous for a loaded machine


def test_outputs_are_dropped_before_nbformat_reads_a_submission(tmp_path):
    nb = nbformat.read(SOLUTIONS / LESSON, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    cell.outputs = [nbformat.v4.new_output("stream", text=["x\n"] * 300_000)]
    path = tmp_path / "big-output.ipynb"
    nbformat.write(nb, path)
    assert read_notebook(path, outputs=False).cells[nb.cells.index(cell)].outputs == []


@pytest.mark.slow
@linux_only
def test_a_hostile_class_folder_grades_to_a_row_per_learner_and_a_report_per_path(tmp_path):
    subs, out = _folder(tmp_path), tmp_path / "out"
    probe = subprocess.run([sys.executable, str(ROOT / "tests" / "lifecycle_probe.py"), str(subs), str(out),
                            "--stop", "none", "--after", "1000", "--", "--jobs", "2", "--timeout", "5"],
                           capture_output=True, text=True, timeout=600, cwd=ROOT)
    result = json.loads(probe.stdout)
    assert result["exit_code"] == 0, result["stderr"]
    assert result["left_running"] == [], "the batch left processes running"
    items = discover(subs)
    for item in items:
        json.loads(item.report_path(out).read_text())
    with open(out / "gradebook.csv", newline="") as f:
        rows = {row["learner"]: row for row in csv.DictReader(f)}
    assert len(rows) == len({item.learner for item in items})
    assert float(rows["alice"]["total"]) == sum(check_points("03_loss_scaling").values())
    assert rows["zed"]["total"] == "0"
    assert rows["sybil"]["total"] == "0" and "symbolic link" in rows["sybil"]["notes"]
    assert "named pipe" in rows["pipe"]["notes"] and "limit" in rows["huge"]["notes"]
    assert rows["carol"]["03_loss_scaling/scale_gradients"] == "4" and "carol.pdf" in rows["carol"]["notes"]
    assert [learner for learner in rows if learner.startswith("'=")], "the formula id is neutralised"
    with open(out / "gradebook.csv", newline="") as f:
        cells = [cell for row in csv.reader(f) for cell in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r")) or "\n" in c]

    first = (out / "gradebook.csv").read_text()
    again = run_grader("grade-class", str(subs), "--out", str(out), "--jobs", "2", "--timeout", "5")
    assert again.returncode == 0 and "0 graded now" in again.stdout
    assert (out / "gradebook.csv").read_text() == first  # carol no longer flips between runs

    (subs / "carol.pdf").unlink()
    shutil.rmtree(subs / "mallory")
    again = run_grader("grade-class", str(subs), "--out", str(out), "--jobs", "2", "--timeout", "5")
    assert again.returncode == 0 and "Moved 5 outputs of files no longer submitted" in again.stdout, again.stdout
    assert not (out / "reports" / "mallory").exists() and not (out / "review" / "mallory.md").exists()
    assert not (out / "gradescope" / "mallory").exists() and (out / "stale" / "review" / "mallory.md").exists()
    assert len(list((out / "reports" / "carol").glob("*.json"))) == 1
    assert "mallory" not in (out / "gradebook.csv").read_text()
