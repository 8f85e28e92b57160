"""Self-checks for lesson 03, loss scaling."""

from __future__ import annotations

from grader.selfcheck.core import SelfCheck

INF, NAN = float("inf"), float("nan")


def check_scale_gradients(scale_gradients) -> None:
    with SelfCheck("scale_gradients") as sc:
        grads = [1.0, -2.5, 0.0]
        got = sc.call(scale_gradients, grads, 8.0)
        sc.compare("every gradient is multiplied by S", [8.0, -20.0, 0.0], got,
                   cause="multiply each g by scale: g * scale (not +, not /, and keep the sign)")
        sc.compare("the input list is left unchanged", [1.0, -2.5, 0.0], grads,
                   cause="build a new list instead of assigning into `grads`")
        sc.compare("a new list comes back", True, got is not grads,
                   cause="return a new list, not the one you were given")
        tiny = 2.0 ** -30
        got = sc.call(scale_gradients, [tiny], 2.0 ** 20)
        sc.compare("a gradient below FP16's range is lifted into it", [2.0 ** -10], got,
                   cause="the product tiny * S should be exact for a power-of-two S")
        got = sc.call(scale_gradients, [3, 1], 2.0)
        sc.compare("int inputs still give floats", [6.0, 2.0], got,
                   cause="convert each item with float(g) before or after multiplying")
        got = sc.call(scale_gradients, [], 1024.0)
        sc.compare("an empty list gives an empty list", [], got, cause="return [] for []")


def check_unscale_gradients(unscale_gradients) -> None:
    with SelfCheck("unscale_gradients") as sc:
        grads = [8.0, -20.0, 0.0]
        got = sc.call(unscale_gradients, grads, 8.0)
        sc.compare("every gradient is divided by S", [1.0, -2.5, 0.0], got,
                   cause="divide each g by scale: g / scale")
        sc.compare("the input list is left unchanged", [8.0, -20.0, 0.0], grads,
                   cause="build a new list instead of assigning into `grads`")
        got = sc.call(unscale_gradients, [INF, 4.0], 2.0)
        sc.compare("inf stays inf, so overflow can still be seen", [INF, 2.0], got,
                   cause="do not replace or drop non-finite values; just divide")


def check_has_overflow(has_overflow) -> None:
    with SelfCheck("has_overflow") as sc:
        sc.compare("finite gradients: no overflow", False, sc.call(has_overflow, [1.0, -2.0, 0.0]),
                   cause="return False when every value is finite")
        sc.compare("an inf anywhere is an overflow", True, sc.call(has_overflow, [1.0, INF]),
                   cause="check every element with math.isfinite, not just the first")
        sc.compare("-inf is an overflow too", True, sc.call(has_overflow, [-INF, 1.0]),
                   cause="x > 65504 misses -inf; use math.isinf or math.isfinite")
        sc.compare("NaN is an overflow too", True, sc.call(has_overflow, [0.0, NAN]),
                   cause="NaN != NaN and NaN > x is False; test with math.isnan or math.isfinite")
        sc.compare("an empty list has no overflow", False, sc.call(has_overflow, []),
                   cause="any([]) is False; make sure an empty list returns False")
