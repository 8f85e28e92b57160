"""Stored outputs hold on CPUs unlike this one: every solution notebook, and every lesson claim,
under each of grader/portability.py's imitations of another machine."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from conftest import ROOT, SOLUTIONS, lesson_ids
from grader.portability import VARIANTS, differing_cells

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("lesson", lesson_ids())
def test_stored_outputs_hold_under_another_cpus_kernels(lesson, variant):
    differences = differing_cells(SOLUTIONS / f"{lesson}.ipynb", {variant: VARIANTS[variant]})
    assert not differences, "\n\n".join(f"{d}\n{d.detail}" for d in differences)


@pytest.mark.parametrize("variant", VARIANTS)
def test_lesson_claims_hold_under_another_cpus_kernels(variant):
    claims = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*_claims.py"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           *claims], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **VARIANTS[variant]}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]


def _notebook(tmp_path, source: str):
    cell = new_code_cell(source)
    cell.id = "only-cell"
    nb = new_notebook(cells=[cell], metadata={"kernelspec": {"name": "python3", "language": "python",
                                                             "display_name": "Python 3"}})
    path = tmp_path / "probe.ipynb"
    nbformat.write(nb, path)
    from grader.refresh import execute
    nbformat.write(execute(path)[0], path)  # store this machine's output, as refresh does
    return path


def test_a_cell_that_prints_a_long_sums_last_digits_is_named(tmp_path):
    path = _notebook(tmp_path, "import torch\n"
                               "x = torch.randn(4096, 512, generator=torch.Generator().manual_seed(0))\n"
                               "print(repr((x @ x.T).sum(dim=1)[:8].tolist()))")
    differences = differing_cells(path)
    assert differences and all(d.cell == 0 and "import torch" in d.first_line for d in differences)


def test_a_cell_that_prints_rounded_casts_passes(tmp_path):
    path = _notebook(tmp_path, "import torch\n"
                               "print(torch.tensor([0.1, 65519.0, 1e-8]).half().tolist())")
    assert differing_cells(path) == []


def test_a_check_that_cannot_run_is_an_error_not_a_pass(tmp_path):
    from grader.portability import PortabilityError
    with pytest.raises(PortabilityError, match="could not run"):
        differing_cells(tmp_path / "missing.ipynb")
