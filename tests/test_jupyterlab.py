"""A lesson opens and runs in a real JupyterLab, driven through its UI by a browser.

Optional: needs Playwright (`pip install playwright`) and Chromium at
/usr/bin/chromium (or $CHROMIUM); skipped where either is missing, as in CI.
Each test starts one JupyterLab server (benchmarks/jupyterlab_run.py) and also
runs two tiny notebooks, to show that the check fails when it should.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from conftest import ROOT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="Playwright is not installed (optional: pip install playwright)"),
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM}"),
]


def tiny_notebook(path, *sources):
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return str(path)


def run_in_jupyterlab(kind, *notebooks, out):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "jupyterlab_run.py"), kind, *notebooks,
                           "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    verdicts = {line.split()[0]: line.split(None, 6)[6] for line in proc.stdout.splitlines()[1:]
                if len(line.split()) > 6}
    return proc, verdicts


def test_solution_lesson_03_runs_clean_and_any_error_fails_the_run(tmp_path):
    stub = tiny_notebook(tmp_path / "stub.ipynb", "raise NotImplementedError('Exercise 1.1')", "print('after')")
    proc, verdicts = run_in_jupyterlab("--solutions", "03", stub, out=tmp_path / "out")
    assert verdicts.get("03_loss_scaling") == "ok", proc.stdout + proc.stderr[-3000:]
    assert "errors: NotImplementedError" in verdicts["stub"] and "1 code cells did not run" in verdicts["stub"]
    assert proc.returncode == 1
    assert (tmp_path / "out" / "03_loss_scaling.png").stat().st_size > 10_000


def test_learner_lesson_03_runs_cell_by_cell_allowing_only_not_implemented_error(tmp_path):
    stub = tiny_notebook(tmp_path / "stub.ipynb", "raise NotImplementedError('Exercise 1.1')", "print('after')")
    broken = tiny_notebook(tmp_path / "broken.ipynb", "import math", "math.sqrt(-1)", "print('after')")
    proc, verdicts = run_in_jupyterlab("--notebooks", "03", stub, broken, out=tmp_path / "out")
    assert verdicts.get("03_loss_scaling") == "ok", proc.stdout + proc.stderr[-3000:]
    assert verdicts["stub"] == "ok"
    assert verdicts["broken"] == "FAIL: errors: ValueError"
    assert proc.returncode == 1
