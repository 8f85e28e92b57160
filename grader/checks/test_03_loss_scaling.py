"""Hidden checks for lesson 03, loss scaling.

Expected values come from the float64 reference below, computed here; inputs are
drawn with hypothesis (subnormals, zeros, huge values whose product overflows,
empty lists) plus fixed edge cases, and sent to the worker in one batch.
"""

import functools
import math

from hypothesis import strategies as st

from grader.checkkit import CheckFailed, call_text, draw, exercise, fail_case
from grader.learner import Ref
from grader.wire import Frozen

INF, NAN = math.inf, math.nan
gradient = st.floats(allow_nan=False, allow_infinity=False)
gradients = st.lists(gradient, max_size=12)
scales = st.one_of(st.sampled_from([1.0, 2.0, 8.0, 1024.0, 65536.0, 2.0 ** 24]),
                   st.floats(min_value=2.0 ** -24, max_value=2.0 ** 64))
BIG_SCALE = 1024.0
EDGE_GRADS = [[], [0.0, -0.0], [5e-324, -5e-324], [2.0 ** -30, 2.0 ** -25], [1e308, -1e308],
              [65504.0, -65504.0, 1.0]]


def _drawn(seed, key):
    drawn = draw(st.tuples(gradients, scales), n=150, seed=seed, key=key)
    # Hand-made cases first, then drawn ones shortest first: the first failure
    # a learner sees is then a small, readable one.
    edges = [([1.0, -2.5, 0.0], 8.0)] + [(g, s) for g in EDGE_GRADS for s in (2.0 ** 16, 0.5)]
    return edges + sorted(drawn, key=lambda c: len(c[0]))


def _values_match(expected: list, got) -> bool:
    """Same numbers (NaN matches NaN, the sign of zero ignored); types are checked elsewhere."""
    if not isinstance(got, list) or len(got) != len(expected):
        return False
    if got == expected:  # the fast path for long lists; NaN needs the loop below
        return True
    for e, g in zip(expected, got):
        if type(g) not in (float, int) and not hasattr(g, "dtype"):
            return False
        g = float(g)
        if not ((math.isnan(e) and math.isnan(g)) or e == g):
            return False
    return True


def _cause_for_scaling(grads, scale, got, multiply: bool) -> str:
    op = "multiply each g by scale (g * scale)" if multiply else "divide each g by scale (g / scale)"
    if not isinstance(got, list):
        return f"return a list; {op}"
    if len(got) != len(grads):
        return "return one value per gradient, in the same order"
    inverse = [g / scale if multiply else g * scale for g in grads]
    if _values_match(inverse, got):
        return f"the operation is inverted: {op}"
    expected = [g * scale if multiply else g / scale for g in grads]
    if _values_match([-x for x in expected], got):
        return "the sign is flipped: keep each gradient's sign"
    if _values_match(list(grads), got):
        return f"the gradients came back unchanged: {op}"
    return f"{op}, in Python float arithmetic (float64); float32 or float16 rounding changes the values"


def _check_batch(learner, name, cases, reference, cause):
    outcomes = learner.map(name, cases)
    for args, outcome in zip(cases, outcomes):
        expected = reference(*args)
        if not outcome.ok or not _values_match(expected, outcome.value):
            fail_case(f"{name} on {len(cases)} lists of gradients", name, args, expected,
                      outcome, cause(*args, outcome.value))


def _check_new_float_list(learner, name, grads, scale):
    """One call that checks: new list, input untouched, items exactly float, length kept."""
    learner.run("def _same_object(a, b):\n    return a is b\n"
                "def _item_types(xs):\n    return [type(x).__name__ for x in xs]\n")
    learner.run(f"_probe = {grads!r}")
    learner.call(name, Ref("_probe"), scale, store="_result")
    if learner.get("_probe") != grads:
        raise CheckFailed("the input list is not modified", call_text(name, (grads, scale)), grads,
                          learner.get("_probe"), "build and return a new list; do not assign into grads")
    if learner.call("_same_object", Ref("_result"), Ref("_probe")):
        raise CheckFailed("a new list is returned", call_text(name, (grads, scale)),
                          "a new list", "the input list itself", "return a new list, e.g. a list comprehension")
    result = learner.get("_result")
    if type(result) is not list:
        raise CheckFailed("the result is a list", call_text(name, (grads, scale)), "a list", result,
                          "return a list (not a tuple, generator or array)")
    if len(result) != len(grads):
        raise CheckFailed("the length is preserved", call_text(name, (grads, scale)), len(grads),
                          len(result), "return exactly one value per gradient")
    types = learner.call("_item_types", Ref("_result"))
    if any(t != "float" for t in types):
        raise CheckFailed("every element is a Python float", call_text(name, (grads, scale)),
                          ["float"] * len(grads), types,
                          "convert with float(...); ints, numpy scalars and subclasses do not count")


# One check moves the full 10^6 gradients the lesson promises; the others use
# 10^5, which still turns any quadratic loop (list concatenation, index()) into a
# timeout, at a tenth of the cost of moving a million floats each way.
MILLION, LONG = 10 ** 6, 10 ** 5


@functools.cache
def _long_input(n: int, multiply: bool) -> tuple[Frozen, list]:
    """An n-gradient input (encoded once) and its expected result, built once per process."""
    grads = [((i % 2001) - 1000) * 2.0 ** -20 for i in range(n)]
    return Frozen(grads), [g * BIG_SCALE if multiply else g / BIG_SCALE for g in grads]


def _check_long(learner, name, multiply: bool, n: int):
    grads, expected = _long_input(n, multiply)
    got = learner.call(name, grads, BIG_SCALE)
    if not _values_match(expected, got):
        head = got[:8] if isinstance(got, list) else got
        size = "10^6" if n == MILLION else "10^5"
        raise CheckFailed(f"{name} on a list of {size} gradients", f"{name}(<{size} gradients>, {BIG_SCALE})",
                          expected, got, _cause_for_scaling(grads.value[:8], BIG_SCALE, head, multiply))


# -- scale_gradients (4 pts) ---------------------------------------------------

@exercise("scale_gradients", points=1)
def test_scale_gradients_multiplies_every_gradient_by_the_scale(learner, seed):
    """scale_gradients multiplies every gradient by S (zeros, subnormals, overflow to inf)."""
    _check_batch(learner, "scale_gradients", _drawn(seed, "03.scale"),
                 lambda g, s: [x * s for x in g],
                 lambda g, s, got: _cause_for_scaling(g, s, got, multiply=True))


@exercise("scale_gradients", points=1)
def test_scale_gradients_propagates_inf_and_nan(learner):
    """Non-finite gradients stay non-finite after scaling, so overflow can be detected."""
    cases = [([INF], 2.0), ([-INF, 1.0], 4.0), ([NAN], 8.0), ([1.0, NAN, -INF], 1024.0)]
    _check_batch(learner, "scale_gradients", cases, lambda g, s: [x * s for x in g],
                 lambda g, s, got: "multiply every value, inf and NaN included; do not filter or clamp them")


@exercise("scale_gradients", points=1)
def test_scale_gradients_returns_a_new_list_of_floats(learner):
    """A new list of Python floats of the same length; the input is not mutated."""
    _check_new_float_list(learner, "scale_gradients", [1.0, -2.5, 0.0, 3e-8], 512.0)


@exercise("scale_gradients", points=1)
def test_scale_gradients_handles_a_million_gradients_in_time(learner):
    """A list of 10^6 gradients is scaled within the time limit."""
    _check_long(learner, "scale_gradients", multiply=True, n=MILLION)


# -- unscale_gradients (3 pts) ---------------------------------------------------

@exercise("unscale_gradients", points=1)
def test_unscale_gradients_divides_every_gradient_by_the_scale(learner, seed):
    """unscale_gradients divides every gradient by S."""
    _check_batch(learner, "unscale_gradients", _drawn(seed, "03.unscale"),
                 lambda g, s: [x / s for x in g],
                 lambda g, s, got: _cause_for_scaling(g, s, got, multiply=False))


@exercise("unscale_gradients", points=1)
def test_unscale_gradients_propagates_inf_and_nan(learner):
    """Non-finite gradients stay non-finite after unscaling."""
    cases = [([INF], 2.0), ([-INF, 8.0], 4.0), ([NAN], 8.0), ([1.0, NAN, INF], 1024.0)]
    _check_batch(learner, "unscale_gradients", cases, lambda g, s: [x / s for x in g],
                 lambda g, s, got: "divide every value, inf and NaN included; do not filter or clamp them")


@exercise("unscale_gradients", points=1)
def test_unscale_gradients_returns_a_new_list_of_floats_fast(learner):
    """A new list of floats, the input untouched, and 10^5 gradients within the time limit."""
    _check_new_float_list(learner, "unscale_gradients", [512.0, -1280.0, 0.0], 512.0)
    _check_long(learner, "unscale_gradients", multiply=False, n=LONG)


# -- has_overflow (3 pts) ---------------------------------------------------

def _check_overflow_batch(learner, cases, what):
    outcomes = learner.map("has_overflow", [(g,) for g in cases])
    for grads, outcome in zip(cases, outcomes):
        expected = any(not math.isfinite(x) for x in grads)
        if not outcome.ok or outcome.value is not expected:
            bad = [x for x in grads if not math.isfinite(x)]
            if not outcome.ok or type(outcome.value) is not bool:
                cause = "return True or False (a bool)"
            elif expected and bad and all(math.isnan(x) for x in bad):
                cause = "NaN compares False with everything; test each value with math.isfinite"
            elif expected and bad and all(x < 0 for x in bad):
                cause = "-inf is an overflow too; test with math.isfinite, not x > limit"
            elif expected:
                cause = "check every element, not only the first or last"
            else:
                cause = "finite values, however large or small, are not an overflow"
            fail_case(what, "has_overflow", (grads,), expected, outcome, cause)


@exercise("has_overflow", points=1)
def test_has_overflow_is_false_for_finite_gradients(learner, seed):
    """Finite gradients, huge or subnormal, and the empty list are not an overflow."""
    drawn = [g for (g,) in draw(st.tuples(gradients), n=100, seed=seed, key="03.finite")]
    cases = sorted([[], [0.0], [1.7976931348623157e308], [5e-324], [65504.0, 65520.0]] + drawn, key=len)
    _check_overflow_batch(learner, cases, "has_overflow is False when every value is finite")


@exercise("has_overflow", points=1)
def test_has_overflow_finds_inf_and_nan_anywhere(learner, seed):
    """inf, -inf or NaN at any position is an overflow."""
    poisoned = st.tuples(st.lists(gradient, min_size=1, max_size=10), st.sampled_from([INF, -INF, NAN]),
                         st.integers(min_value=0, max_value=10))
    cases = [[INF], [-INF], [NAN], [1.0, 2.0, NAN], [-INF, 0.0, 0.0], [0.0, INF, 0.0]]
    for grads, bad, where in draw(poisoned, n=100, seed=seed, key="03.poisoned"):
        grads = list(grads)
        grads.insert(min(where, len(grads)), bad)
        cases.append(grads)
    _check_overflow_batch(learner, sorted(cases, key=len), "has_overflow finds inf, -inf and NaN")


@exercise("has_overflow", points=1)
def test_has_overflow_returns_a_bool_quickly_on_long_lists(learner):
    """It returns a bool, and scans 10^5 gradients within the time limit."""
    got = learner.call("has_overflow", _poisoned_long())
    if got is not True:
        cause = ("return a bool (True/False), not a number or a numpy bool"
                 if type(got) is not bool else "the last element of a long list must be checked too")
        raise CheckFailed("has_overflow on 10^5 gradients", "has_overflow(<10^5 finite values, then nan>)",
                          True, got, cause)


@functools.cache
def _poisoned_long() -> Frozen:
    return Frozen([1.0] * (LONG - 1) + [NAN])
