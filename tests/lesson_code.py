"""Run a solution notebook's code in this process, to check a lesson's claims with tolerances.

nbval compares what a lesson prints, exactly. A number whose last digits depend
on the CPU (a matmul or a reduction: AVX2, AVX-512, AMX and ARM kernels group a
sum differently) is printed as a verdict, an order of magnitude or a rounded
share. The claim tests use this module to recompute those numbers with the
lesson's own code and check the precise claims behind them, and that each
printed rounding has room to spare on a CPU that sums differently.
"""

from __future__ import annotations

import functools
import io
import warnings
from contextlib import redirect_stdout

import matplotlib
import nbformat

from conftest import SOLUTIONS

matplotlib.use("Agg")


@functools.cache
def lesson_namespace(lesson: str, until: str | None = None) -> dict:
    """The globals of `solutions/<lesson>.ipynb` after its code cells ran in order,
    up to and including the cell whose source contains `until` (all of them if None)."""
    import matplotlib.pyplot as plt
    import torch

    nb = nbformat.read(SOLUTIONS / f"{lesson}.ipynb", as_version=4)
    namespace: dict = {"__name__": "__lesson__"}
    threads = torch.get_num_threads()
    try:
        with redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for cell in nb.cells:
                if cell.cell_type != "code":
                    continue
                exec(compile(cell.source, f"<{lesson} cell {cell.get('id')}>", "exec"), namespace)
                if until is not None and until in cell.source:
                    break
            else:
                assert until is None, f"no code cell of {lesson} contains {until!r}"
    finally:
        torch.set_num_threads(threads)
        plt.close("all")
    return namespace


def prints_stably(value: float, spec: str, rel: float = 0.0, step: float = 0.0) -> bool:
    """Would `format(value, spec)` read the same if the value moved by `rel` (relative)
    or by `step` (absolute, e.g. one count out of N)? A CPU that sums in another order
    moves it by about that much."""
    delta = abs(value) * rel + step
    return len({format(value - delta, spec), format(value, spec), format(value + delta, spec)}) == 1
