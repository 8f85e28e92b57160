"""A file that is not a usable notebook gets one clear line and exit code 2."""

import json

import pytest

from conftest import run_grader


@pytest.mark.parametrize("content, says", [
    (None, "no such file"),
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "binary"),
    (b'{"cells": [', "not valid JSON"),
    (json.dumps({"hello": 1}).encode(), "not a notebook"),
    (json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [], "metadata": {}}).encode(), "v3"),
])
def test_unusable_files_exit_2_with_one_clear_line(tmp_path, content, says):
    path = tmp_path / "submission.ipynb"
    if content is not None:
        path.write_bytes(content)
    proc = run_grader("grade", str(path))
    assert proc.returncode == 2
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_file_that_is_not_ipynb_is_a_usage_error(tmp_path):
    path = tmp_path / "answers.py"
    path.write_text("print(1)")
    proc = run_grader("grade", str(path))
    assert proc.returncode == 2 and "not a notebook" in proc.stderr


@pytest.mark.parametrize("args, says", [
    ([], "required"),
    (["grade"], "required"),
    (["grade", "x.ipynb", "--timeout", "soon"], "invalid float"),
    (["grade", "x.ipynb", "--timeout", "-1"], "positive"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_exit_2_without_a_traceback(args, says, tmp_path):
    proc = run_grader(*args)
    assert proc.returncode == 2
    assert says in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_lesson_says_which_lessons_exist(tmp_path):
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"course": {"lesson": "99_nope"}}, "cells": []}
    path = tmp_path / "s.ipynb"
    path.write_text(json.dumps(nb))
    proc = run_grader("grade", str(path))
    assert proc.returncode == 2 and "03_loss_scaling" in proc.stderr
