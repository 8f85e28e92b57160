"""Do a notebook's stored outputs hold on other CPUs? Imitate them, and let nbval say.

oneDNN and ATen choose their kernels when the process starts, from the CPU and
from environment variables, so one machine can run a notebook the way a
machine with other instructions would. A matmul or a reduction then sums in
another order, and any printed digit that depends on that order changes.
`differing_cells` re-runs a notebook under nbval in each of `VARIANTS` and
names every cell whose output is not what is stored. `python -m grader refresh`
and the test suite (tests/test_portability.py) both use it.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

COURSE_ROOT = Path(__file__).resolve().parent.parent
SANITIZE = COURSE_ROOT / ".nbval-sanitize.cfg"

# Each imitates a machine unlike a recent AVX-512 server: a plain AVX2 laptop
# (no AVX-512 kernels, scalar ATen loops), and one thread with AVX2 loops.
VARIANTS: dict[str, dict[str, str]] = {
    "AVX2 kernels, scalar ATen loops": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "default"},
    "one thread, AVX2 ATen loops": {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2"},
}


class PortabilityError(RuntimeError):
    """The check itself could not run (a broken notebook path, a pytest usage error)."""


@dataclass(frozen=True)
class Difference:
    variant: str
    cell: int  # nbval's index: the n-th code cell, from 0
    first_line: str
    detail: str

    def __str__(self) -> str:
        return f"code cell {self.cell} ({self.first_line!r}) differs under {self.variant}"


class _Failures:
    """A pytest plugin that keeps each failed nbval cell and nbval's own explanation."""

    def __init__(self, variant: str):
        self.variant = variant
        self.found: list[Difference] = []

    def pytest_runtest_makereport(self, item, call):
        if call.excinfo is not None and hasattr(item, "cell_num"):
            first = next((line for line in item.cell.source.splitlines() if line.strip()), "")
            self.found.append(Difference(self.variant, item.cell_num, first[:60],
                                         str(item.repr_failure(call.excinfo))[-1500:]))


@contextlib.contextmanager
def _environment(changes: dict[str, str]):
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)  # nbval's kernel is a child process: it inherits these
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def differing_cells(notebook: Path, variants: dict[str, dict[str, str]] = VARIANTS) -> list[Difference]:
    """Every cell of `notebook` whose output under a variant differs from what is stored."""
    found: list[Difference] = []
    for name, changes in variants.items():
        plugin = _Failures(name)
        args = [str(notebook), "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--nbval",
                "--nbval-current-env", "--nbval-sanitize-with", str(SANITIZE),
                "--nbval-cell-timeout", "120", "--rootdir", str(COURSE_ROOT), "-c", os.devnull]
        with _environment(changes), contextlib.redirect_stdout(io.StringIO()) as printed:
            code = pytest.main(args, plugins=[plugin])
        if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            # A check that could not run must never read as "no difference".
            raise PortabilityError(f"nbval could not run {notebook} under {name} (pytest exit code "
                                   f"{int(code)}):\n{printed.getvalue()[-2000:]}")
        found += plugin.found
    return found
