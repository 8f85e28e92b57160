"""Shared helpers for the project's own tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Fixture notebooks are submissions to grade, not notebooks for nbval to run.
collect_ignore_glob = ["fixtures/*"]


def lesson_ids() -> list[str]:
    return sorted(p.stem for p in SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))


def run_grader(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m grader ...` in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "grader", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def grade_to_json(notebook: Path, tmp_path: Path, *extra: str) -> dict:
    report = tmp_path / f"{notebook.stem}.json"
    proc = run_grader("grade", str(notebook), "--json", str(report), *extra)
    assert proc.returncode == 0, f"grader exited {proc.returncode}: {proc.stderr[-3000:]}"
    return json.loads(report.read_text())


@pytest.fixture
def grade_json(tmp_path):
    return lambda notebook, *extra: grade_to_json(Path(notebook), tmp_path, *extra)
