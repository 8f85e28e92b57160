"""The self-check table that follows every exercise in a lesson.

A self-check runs the learner's own function in the notebook's kernel on a few
small, readable cases and prints one row per property: what was checked, the
expected value, what came back, and a verdict. A failing row carries a likely
cause. It never lets an exception escape, so a learner never sees a bare
AssertionError or a traceback from the checker itself.

Self-checks are public and only advisory; the grade comes from the hidden
checks, which run the learner's code in a separate process.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass

from grader.render import render

NOT_IMPLEMENTED = "not implemented yet"


class _Stop(Exception):
    """Ends a self-check early once the learner's function cannot be called."""


@dataclass
class Row:
    check: str
    expected: str
    got: str
    ok: bool
    cause: str = ""


def same(expected, got) -> bool:
    """Exact equality that also demands the same types and treats NaN == NaN.

    `1 == 1.0` is True in Python, but a gradient list that comes back as ints
    is a bug, so types are compared too.
    """
    if type(expected) is not type(got):
        return False
    if isinstance(expected, float):
        return (math.isnan(expected) and math.isnan(got)) or expected == got
    if isinstance(expected, (list, tuple)):
        return len(expected) == len(got) and all(same(e, g) for e, g in zip(expected, got))
    if isinstance(expected, dict):
        return expected.keys() == got.keys() and all(same(expected[k], got[k]) for k in expected)
    return expected == got


class SelfCheck:
    """Collects rows for one exercise and prints them as a table.

    Use it as a context manager so that an unimplemented stub or a crash in
    the learner's code ends the check with a readable message:

        with SelfCheck("scale_gradients") as sc:
            got = sc.call(scale_gradients, [1.0, -2.0], 8.0)
            sc.compare("each gradient is multiplied by S", [8.0, -16.0], got,
                       cause="multiply every element by scale")
    """

    def __init__(self, exercise: str):
        self.exercise = exercise
        self.rows: list[Row] = []
        self.stopped: str | None = None

    # -- building rows -------------------------------------------------
    def call(self, fn, *args, **kwargs):
        """Call the learner's function, turning a raise into a readable stop."""
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            self.stopped = NOT_IMPLEMENTED
        except Exception as exc:  # noqa: BLE001 - any learner error becomes a row
            where = _learner_line(exc)
            self.stopped = f"{type(exc).__name__}: {exc}{where}"
        raise _Stop

    def row(self, check: str, expected, got, ok: bool, cause: str = "") -> bool:
        self.rows.append(Row(check, render(expected), render(got), bool(ok), "" if ok else cause))
        return bool(ok)

    def compare(self, check: str, expected, got, cause: str = "") -> bool:
        """A row that passes when `got` equals `expected` exactly, types included."""
        return self.row(check, expected, got, same(expected, got), cause)

    def close(self, check: str, expected: float, got, rel: float = 1e-6, cause: str = "") -> bool:
        """A row that passes when `got` is a float within `rel` of `expected`.

        A passing row names the tolerance instead of printing the two numbers:
        their last digits depend on the CPU's matmul and reduction kernels, and
        a stored notebook output must read the same on every machine.
        """
        ok = isinstance(got, float) and (
            (math.isnan(expected) and math.isnan(got))
            or got == expected
            or math.isclose(got, expected, rel_tol=rel, abs_tol=0.0)
        )
        if ok:
            self.rows.append(Row(check, f"reference, within rel. {rel:g}", "within", True))
            return True
        return self.row(check, expected, got, False, cause)

    def within(self, check: str, error: float, limit: float, cause: str = "") -> bool:
        """A row that passes when a measured error is below `limit`; the error is shown
        only when it is not, for the same reason as in `close`."""
        ok = error < limit
        self.rows.append(Row(check, f"error < {limit:g}", f"error < {limit:g}" if ok else f"{error:.3g}",
                             ok, "" if ok else cause))
        return ok

    @property
    def passed(self) -> bool:
        return self.stopped is None and all(r.ok for r in self.rows)

    # -- context manager -----------------------------------------------
    def __enter__(self) -> "SelfCheck":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and not issubclass(exc_type, _Stop):
            # A bug in how the learner's value was inspected (say, len() of an int):
            # report it as a failed row rather than a traceback.
            self.stopped = f"could not inspect the result: {type(exc).__name__}: {exc}"
        print(self.table())
        return True

    def table(self) -> str:
        title = f"Self-check: {self.exercise}"
        if self.stopped == NOT_IMPLEMENTED:
            return (f"{title}\n  {self.exercise}: {NOT_IMPLEMENTED} - replace the "
                    "`raise NotImplementedError(...)` line with your code, then run this cell again.")
        lines = [title]
        if self.rows:
            headers = ("check", "expected", "got", "verdict")
            cells = [(r.check, r.expected, r.got, "PASS" if r.ok else "FAIL") for r in self.rows]
            widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
            fmt = "  " + " | ".join(f"{{:<{w}}}" for w in widths)
            lines.append(fmt.format(*headers))
            lines.append("  " + "-+-".join("-" * w for w in widths))
            lines.extend(fmt.format(*c) for c in cells)
        if self.stopped is not None:
            lines.append(f"  Your function raised {self.stopped}")
        causes = [f"  - {r.check}: {r.cause}" for r in self.rows if not r.ok and r.cause]
        if causes:
            lines.append("Likely cause:")
            lines.extend(causes)
        n_ok = sum(r.ok for r in self.rows)
        verdict = "all passed" if self.passed else f"{n_ok}/{len(self.rows)} passed"
        lines.append(f"Result: {verdict}. (Self-checks are a quick guide; the grader runs more cases.)")
        return "\n".join(lines)


def _learner_line(exc: BaseException) -> str:
    """Point at the learner's own line, the last frame outside this module."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    if not frames:
        return ""
    last = frames[-1]
    return f" (line {last.lineno}: {last.line})" if last.line else f" (line {last.lineno})"
