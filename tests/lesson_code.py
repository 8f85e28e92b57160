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
import math
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


def order_is_stable(x: float, margin: float = 1.05) -> bool:
    """`order(x)` prints the decade of x; it is stable when x is not within `margin` of a power of ten."""
    frac = math.log10(x) - math.floor(math.log10(x))
    return math.log10(margin) < frac < 1 - math.log10(margin)


def share_is_stable(share: float, n: int, counts: float = 3, spec: str | None = None) -> bool:
    """A share of n items prints the same if `counts` items more or fewer had crossed its
    threshold on another CPU. With no `spec`, the `pct` rule of lesson 03: one decimal below 1%."""
    near = {min(max(share + d, 0.0), 1.0) for d in (-counts / n, 0.0, counts / n)}  # stays in [0, 1]
    return len({format(x, spec or (".1%" if x < 0.01 else ".0%")) for x in near}) == 1
