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


def _stat(name: str, kind: str, max_abs: float, low_abs: float) -> dict:
    return {"name": name, "kind": kind, "max_abs": max_abs, "low_abs": low_abs}


def _raised(fn, *args) -> str:
    """The name of what fn(*args) raised, "nothing", or NotImplementedError re-raised for sc.call."""
    try:
        fn(*args)
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001 - any raise becomes a row
        return type(exc).__name__
    return "nothing"


def check_choose_static_scale(choose_static_scale) -> None:
    with SelfCheck("choose_static_scale") as sc:
        example = [_stat("out.0", "activation", 0.01, 1e-12), _stat("0.weight", "weight", 0.5, 1e-6)]
        kept = [dict(s) for s in example]
        got = sc.call(choose_static_scale, example)
        sc.compare("the docstring's example", {"scale": 8192.0, "limited_by": "0.weight",
                                               "underflowing": ["out.0"]}, got,
                   cause="S is the largest power of two with S * headroom * max_abs <= 65504 for every "
                         "tensor; 65504 / (8 * 0.5) = 16376, and the power of two below it is 8192")
        sc.compare("grad_stats is left unchanged", True, example == kept,
                   cause="read the dicts; do not write into them or reorder the list")
        middle = [_stat("out.3", "activation", 2.0**-6, 2.0**-40), _stat("3.bias", "weight", 2.0**-2, 2.0**-9),
                  _stat("out.2", "activation", 2.0**-7, 2.0**-41)]
        got = sc.call(choose_static_scale, middle, 1.0)
        sc.compare("a weight gradient in the middle sets the limit", (2.0**17, "3.bias"),
                   (got.get("scale"), got.get("limited_by")) if isinstance(got, dict) else got,
                   cause="every tensor counts, whatever its kind or position: the largest max_abs of "
                         "them all sets the ceiling")
        got = sc.call(choose_static_scale, [_stat("6.bias", "weight", 1e5, 1.0)], 1.0)
        sc.compare("S can be below 1", 0.5, got.get("scale") if isinstance(got, dict) else got,
                   cause="when max_abs * headroom > 65504 even S = 1 overflows: the exponent goes negative")
        got = sc.call(choose_static_scale, [_stat("out.0", "activation", 65504.0 / 2.0**12, 0.0)], 1.0)
        sc.compare("exactly 65504 is still allowed", 2.0**12, got.get("scale") if isinstance(got, dict) else got,
                   cause="the bound is S * headroom * max_abs <= 65504, equality included")
        sc.compare("an empty list raises ValueError", "ValueError", sc.call(_raised, choose_static_scale, []),
                   cause="raise ValueError with a message when grad_stats is empty")


def check_measure_scale(measure_scale) -> None:
    import torch

    with SelfCheck("measure_scale") as sc:
        g = torch.tensor([0.0, 2.0**-40, 2.0**-30, 1.0, 1024.0])
        kept = g.clone()
        got = sc.call(measure_scale, {"out.0": g}, 2.0**10)
        sc.compare("the docstring's example", {"out.0": {"numel": 5, "underflow": 1, "subnormal": 1,
                                                         "overflow": 1}}, got,
                   cause="h = (g * scale).to(torch.float16); count nonzero g lost to 0, 0 < |h| < 2**-14, "
                         "and inf; return Python ints (int(...) of a 0-dim tensor)")
        sc.compare("the input tensor is left unchanged", True, bool(torch.equal(g, kept)),
                   cause="g * scale makes a new tensor; g.mul_(scale) would change the caller's")
        got = sc.call(measure_scale, {"b": torch.tensor([[1.0, 2.0]]), "a": torch.tensor([3.0])}, 1.0)
        sc.compare("keys come back in the input's order", ["b", "a"], list(got) if isinstance(got, dict) else got,
                   cause="build the result by walking grads.items() in order")
        got = sc.call(measure_scale, {"w": torch.tensor([65504.0, 65519.0, 65520.0, -1e6])}, 1.0)
        sc.compare("FP16 overflows from 65520, not just above 65504", 2,
                   got.get("w", {}).get("overflow") if isinstance(got, dict) else got,
                   cause="let the cast decide: 65519 rounds down to 65504, 65520 and beyond become inf")
        got = sc.call(measure_scale, {"w": torch.tensor([0.0, 1.5 * 2.0**-25, 2.0**-25])}, 1.0)
        sc.compare("a gradient that was already 0 is not lost; 1.5 * 2^-25 survives",
                   {"numel": 3, "underflow": 1, "subnormal": 1, "overflow": 0},
                   got.get("w") if isinstance(got, dict) else got,
                   cause="count g != 0 with h == 0 as lost; 1.5 * 2**-25 rounds up to 2**-24, a subnormal")
