"""Hidden checks for lesson 03, loss scaling.

Expected values are computed here: the warm-ups against a float64 reference, the
static scale against an exact frexp-based reference, and the measurement against
torch's own float32 multiply and float16 cast. Inputs are drawn with hypothesis
(subnormals, zeros, huge values whose product overflows, empty lists, statistics
whose largest gradient sits in any tensor) plus fixed edge cases, and sent to the
worker in one batch per check.
"""

import functools
import math

import torch
from hypothesis import strategies as st

from grader.checkkit import CheckFailed, call_text, draw, exercise, fail_case, render, same
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


# -- choose_static_scale (6 pts) ------------------------------------------------
#
# The reference is exact: headroom * max_abs = m * 2**e with 0.5 <= m < 1 (frexp is exact), so
# S = 2**k keeps S * headroom * max_abs = m * 2**(e + k) at or below 65504 = (65504/65536) * 2**16
# exactly when e + k <= 16, or e + k <= 15 for m above 65504/65536. Multiplying by a power of two
# does not round, so the learner's product in Python floats agrees with it to the last bit.

FP16_MAX = 65504.0
ROUNDS_TO_ZERO = 2.0 ** -25  # FP16's round-half-to-even sends 2**-25 and everything below to 0


def reference_scale(stats: list[dict], headroom: float) -> float:
    mantissa, exponent = math.frexp(headroom * max(s["max_abs"] for s in stats))
    return math.ldexp(1.0, (16 if mantissa <= FP16_MAX / 65536 else 15) - exponent)


def reference_choice(stats: list[dict], headroom: float, scale: float | None = None) -> dict:
    """The contract's answer; `scale` (a learner's) replaces the reference scale for `underflowing`."""
    tops = [s["max_abs"] for s in stats]
    scale = reference_scale(stats, headroom) if scale is None else scale
    return {"scale": reference_scale(stats, headroom), "limited_by": stats[tops.index(max(tops))]["name"],
            "underflowing": [s["name"] for s in stats if s["low_abs"] > 0 and scale * s["low_abs"] <= ROUNDS_TO_ZERO]}


def _stat(name: str, kind: str, max_abs: float, low_abs: float = 0.0) -> dict:
    return {"name": name, "kind": kind, "max_abs": max_abs, "low_abs": low_abs}


def _stats_from(spec: list[tuple]) -> list[dict]:
    """Drawn (kind, max_abs, binades below max_abs or None) triples as named statistics."""
    stats = []
    for i, (kind, top, below) in enumerate(spec):
        name = f"out.{i}" if kind == "activation" else f"{i}.{'weight' if i % 2 else 'bias'}"
        stats.append(_stat(name, kind, top, top * 2.0 ** -below if below is not None and top > 0 else 0.0))
    if all(s["max_abs"] == 0 for s in stats):
        stats[0]["max_abs"] = 1.0
    return stats


stat_specs = st.lists(st.tuples(st.sampled_from(["activation", "weight"]),
                                st.one_of(st.just(0.0), st.floats(min_value=2.0 ** -60, max_value=2.0 ** 30)),
                                st.one_of(st.none(), st.floats(min_value=0.0, max_value=60.0))),
                      min_size=1, max_size=8)
headrooms = st.one_of(st.sampled_from([1.0, 2.0, 8.0, 16.0, 3.0, 10.0, 1.5]),
                      st.floats(min_value=1.0, max_value=1024.0))

# Shaped like the lesson's network: small activation gradients, a larger weight gradient in the
# middle or at the end, so a rule that skips weights or reads one tensor shows on the first cases.
SHAPED = [
    ([_stat("out.0", "activation", 2.0 ** -9.5, 2.0 ** -40), _stat("out.6", "activation", 2.0 ** -5.7, 2.0 ** -33.5),
      _stat("0.weight", "weight", 2.0 ** -7.6, 2.0 ** -16.6), _stat("6.bias", "weight", 2.0 ** -3.2, 2.0 ** -5.7)], 8.0),
    ([_stat("out.1", "activation", 0.02, 1e-11), _stat("1.weight", "weight", 3.5, 1e-3),
      _stat("out.0", "activation", 0.04, 1e-12)], 1.0),
    ([_stat("0.bias", "weight", 900.0, 1e-2), _stat("out.0", "activation", 2.0, 1e-9),
      _stat("out.1", "activation", 0.5, 1e-10)], 4.0),
]


def _drawn_stats(seed, key: str, n: int) -> list[tuple[list[dict], float]]:
    drawn = draw(st.tuples(stat_specs, headrooms), n=n, seed=seed, key=key)
    return SHAPED + sorted(((_stats_from(spec), h) for spec, h in drawn), key=lambda c: len(c[0]))


def _is_power_of_two(x) -> bool:
    return type(x) is float and 0 < x < math.inf and math.frexp(x)[0] == 0.5


def _nonzero(stats: list[dict]) -> bool:
    return any(s["max_abs"] > 0 for s in stats)


def _scale_cause(stats: list[dict], headroom: float, got) -> str:
    """A likely cause for a wrong "scale", found by recomputing the plausible slips."""
    if type(got) is not dict or "scale" not in got:
        return 'return a dict with the keys "scale", "limited_by" and "underflowing"'
    scale = got["scale"]
    if type(scale) is not float:
        name = type(scale).__name__
        return (f'"scale" is {"an" if name[0] in "aeiou" else "a"} {name}; return a Python float: '
                "2 ** k is an int for k >= 0, while 2.0 ** k or math.ldexp(1.0, k) is always a float")
    if not _is_power_of_two(scale):
        return ("S is not a power of two: round the exponent k to an integer and return 2.0 ** k; "
                "a power of two scales and unscales FP16 gradients without rounding")
    expected = reference_scale(stats, headroom)
    activations = [s for s in stats if s["kind"] == "activation"]
    slips = [
        (1.0 if expected < 1.0 else None,
         "S stopped at 1: when headroom * max_abs exceeds 65504, even S = 1 overflows, so the "
         "exponent k has to go negative"),
        (activations and _nonzero(activations) and reference_scale(activations, headroom),
         "the weight gradients were left out: they are stored in FP16 too, and here one of them "
         "holds the largest |g| of the pass"),
        (reference_scale(stats[-1:], headroom) if _nonzero(stats[-1:]) else None,
         "only the last tensor was used: the largest max_abs can sit in any layer, so take the "
         "maximum over every entry"),
        (reference_scale(stats, 1.0 / headroom),
         "the headroom is applied the wrong way: S * headroom * max_abs <= 65504, so a larger "
         "headroom must give a smaller S"),
        (reference_scale(stats, 1.0), "the headroom was left out: the bound is S * headroom * max_abs <= 65504"),
        (2 * expected, "S is one power of two too large, so S * headroom * max_abs exceeds 65504: round "
                       "the exponent down (floor, not ceil or frexp's exponent), and check the product "
                       "itself, since log2 of a rounded ratio can come out one too high"),
        (expected / 2, "S is one power of two too small: the bound allows equality (<= 65504), and "
                       "twice your S still meets it"),
    ]
    causes = [cause for value, cause in slips if value and scale == value != expected]
    if causes:  # two slips can give the same number on one case: name them all
        return " - or - ".join(causes)
    return "S is the largest power of two with S * headroom * max_abs <= 65504 for every tensor"


def _check_scales(learner, cases: list[tuple], checked: str) -> None:
    outcomes = learner.map("choose_static_scale", cases)
    for (stats, headroom), outcome in zip(cases, outcomes):
        expected = reference_scale(stats, headroom)
        got = outcome.value.get("scale") if outcome.ok and type(outcome.value) is dict else None
        if not outcome.ok or type(got) is not float or got != expected:
            fail_case(checked, "choose_static_scale", (stats, headroom), {"scale": expected}, outcome,
                      _scale_cause(stats, headroom, outcome.value))


@exercise("choose_static_scale", points=2)
def test_choose_static_scale_finds_the_largest_safe_power_of_two(learner, seed):
    """S is the largest power of two with S * headroom * max_abs <= 65504, on drawn statistics."""
    _check_scales(learner, _drawn_stats(seed, "03.choose", 120),
                  "the scale is the largest power of two with S * headroom * max_abs <= 65504 for every tensor")


@exercise("choose_static_scale", points=1)
def test_choose_static_scale_counts_every_tensor_weights_included(learner):
    """The largest gradient may be a weight gradient, in any position: every tensor bounds S."""
    cases = []
    for position in range(4):
        stats = [_stat(f"out.{i}", "activation", 2.0 ** -(6 + i), 2.0 ** -(40 + i)) for i in range(3)]
        stats.insert(position, _stat(f"{position}.weight", "weight", 0.75, 2.0 ** -12))
        cases += [(stats, 8.0), (stats, 1.0)]
    cases.append(([_stat("out.3", "activation", 2.0 ** -3), _stat("3.bias", "weight", 2.0 ** -1),
                   _stat("out.2", "activation", 2.0 ** -4)], 2.0))
    _check_scales(learner, cases, "every tensor bounds S, the weight gradients and every layer included")


@exercise("choose_static_scale", points=1)
def test_choose_static_scale_is_exact_at_the_edge_and_below_one(learner):
    """Equality with 65504 is allowed, one unit in the last place above is not, and S may be below 1."""
    cases = []
    for k, headroom in [(12, 1.0), (20, 8.0), (0, 2.0), (-3, 1.0), (30, 64.0)]:
        edge = FP16_MAX * 2.0 ** -k / headroom
        cases += [([_stat("6.bias", "weight", edge)], headroom),
                  ([_stat("6.bias", "weight", math.nextafter(edge, math.inf))], headroom),
                  ([_stat("6.bias", "weight", math.nextafter(edge, 0.0))], headroom)]
    cases += [([_stat("out.0", "activation", 1e9, 1.0)], 8.0), ([_stat("out.0", "activation", 70000.0)], 1.0),
              ([_stat("out.0", "activation", 2.0 ** -100)], 3.0)]
    _check_scales(learner, cases, "S * headroom * max_abs <= 65504 decides, equality included, "
                                  "and S may be below 1")


def _names_cause(stats: list[dict], scale: float, key: str, got) -> str:
    if key == "limited_by":
        tops = [s["max_abs"] for s in stats]
        tied = [s["name"] for s in stats if s["max_abs"] == max(tops)]
        if got in tied:
            return "on a tie, limited_by names the first tensor in the list with the largest max_abs"
        return "limited_by names the tensor with the largest max_abs, whatever its kind or position"
    if type(got) is not list:
        return "underflowing is a list of names"
    lows = {s["name"]: s["low_abs"] for s in stats}
    if any(lows.get(name) == 0.0 for name in got):
        return "a low_abs of 0 means the tensor has no nonzero gradient: it cannot underflow"
    if any(lows.get(name, 0.0) > 0 and scale * lows[name] > ROUNDS_TO_ZERO for name in got):
        return ("only S * low_abs <= 2**-25 rounds to zero: FP16 rounds anything above 2**-25 up to "
                "its smallest subnormal, 2**-24")
    if any(scale * s["low_abs"] == ROUNDS_TO_ZERO for s in stats if s["name"] not in got):
        return "2**-25 itself rounds to zero in FP16 (round half to even): the test includes equality"
    if sorted(got) == sorted(s["name"] for s in stats if s["low_abs"] > 0 and scale * s["low_abs"] <= ROUNDS_TO_ZERO):
        return "list the underflowing tensors in the order of grad_stats"
    return "underflowing lists every tensor with low_abs > 0 and S * low_abs <= 2**-25, in input order"


@exercise("choose_static_scale", points=1)
def test_choose_static_scale_names_the_limit_and_what_still_underflows(learner, seed):
    """limited_by and underflowing follow the contract, judged at the learner's own scale."""
    ties = [_stat("out.0", "activation", 0.5, 2.0 ** -30), _stat("0.weight", "weight", 0.5, 2.0 ** -14),
            _stat("out.1", "activation", 0.25, 0.0)]
    # At headroom 4 the scale is 2**13, so these put S * low_abs at 2**-27, 1.5 * 2**-25, 2**-25 and 2**-24.
    edge = [_stat("out.0", "activation", 1.0, 2.0 ** -40), _stat("out.1", "activation", 0.5, 1.5 * 2.0 ** -38),
            _stat("out.2", "activation", 0.5, 2.0 ** -38), _stat("out.3", "activation", 0.5, 2.0 ** -37)]
    cases = [(ties, 1.0), (edge, 4.0)] + _drawn_stats(seed, "03.names", 60)
    outcomes = learner.map("choose_static_scale", cases)
    for (stats, headroom), outcome in zip(cases, outcomes):
        got = outcome.value
        if not outcome.ok or type(got) is not dict:
            fail_case("choose_static_scale returns a dict", "choose_static_scale", (stats, headroom),
                      reference_choice(stats, headroom), outcome,
                      'return a dict with the keys "scale", "limited_by" and "underflowing"')
        scale = got.get("scale") if _is_power_of_two(got.get("scale")) else None
        expected = reference_choice(stats, headroom, scale)
        for key in ("limited_by", "underflowing"):
            if not same(expected[key], got.get(key)):
                raise CheckFailed(f"{key} follows the contract (judged at the scale your function returned)",
                                  call_text("choose_static_scale", (stats, headroom)),
                                  {key: expected[key]}, {key: got.get(key)},
                                  _names_cause(stats, scale or expected["scale"], key, got.get(key)))


@exercise("choose_static_scale", points=1)
def test_choose_static_scale_refuses_unusable_statistics_and_keeps_its_input(learner):
    """ValueError for an empty list, a non-finite max_abs, or all max_abs 0; grad_stats is not modified."""
    bad = [([], "an empty list"),
           ([_stat("out.0", "activation", 0.5), _stat("6.bias", "weight", INF)], "a max_abs of inf"),
           ([_stat("6.bias", "weight", NAN), _stat("out.0", "activation", 0.5)], "a max_abs of NaN"),
           ([_stat("out.0", "activation", 0.0), _stat("0.weight", "weight", 0.0)], "every max_abs 0")]
    outcomes = learner.map("choose_static_scale", [(stats, 8.0) for stats, _ in bad])
    for (stats, what), outcome in zip(bad, outcomes):
        if outcome.raised is not None and outcome.raised.not_implemented:
            raise outcome.raised
        if outcome.raised is None or outcome.raised.type_name != "ValueError":
            got = outcome.value
            if outcome.raised is not None:
                name, message = outcome.raised.type_name, outcome.raised.message
                got = message if message.startswith(name) else f"{name}: {message}"
            cause = ("max(...) over NaN depends on where the NaN sits, and inf gives S = 0.0: test "
                     "math.isfinite on every max_abs first" if "max_abs of" in what else
                     "check for this case before computing, and raise ValueError with a message")
            raise CheckFailed(f"choose_static_scale raises ValueError for {what}",
                              call_text("choose_static_scale", (stats, 8.0)), "ValueError", got, cause)
    probe = [_stat("out.0", "activation", 0.01, 1e-12), _stat("0.weight", "weight", 0.5, 1e-6)]
    learner.run(f"_probe = {probe!r}")
    learner.call("choose_static_scale", Ref("_probe"), 8.0)
    if learner.get("_probe") != probe:
        raise CheckFailed("grad_stats is not modified", call_text("choose_static_scale", (probe, 8.0)),
                          probe, learner.get("_probe"), "read the dicts; do not write into them, sort or pop the list")


# -- measure_scale (4 pts) ------------------------------------------------------
#
# Expected counts come from torch's own float32 multiply and float16 cast, here in the trusted
# process, on the same float32 tensors the worker receives (they cross as raw bytes).

KEYS = ("numel", "underflow", "subnormal", "overflow")


def reference_counts(g, scale: float) -> dict:
    h = (g * scale).to(torch.float16)
    magnitude = h.abs()
    return {"numel": g.numel(), "underflow": int(((g != 0) & (h == 0)).sum()),
            "subnormal": int(((magnitude > 0) & (magnitude < 2.0 ** -14)).sum()),
            "overflow": int(torch.isinf(h).sum())}


def _slip_counts(g, scale: float) -> list[tuple[dict, str]]:
    """The counts each plausible slip gives, with the cause to report when a learner's match."""
    right = reference_counts(g, scale)
    product = g * scale
    h = product.to(torch.float16)
    cast_first = g.to(torch.float16) * scale
    return [
        ({**right, "underflow": int(((g != 0) & (cast_first == 0)).sum()),
          "overflow": int(torch.isinf(cast_first).sum()),
          "overflow": int(torch.isinf(cast_first).sum()),
          "subnormal": int(((cast_first.abs() > 0) & (cast_first.abs() < 2.0 ** -14)).sum())},
         "the gradients were cast to FP16 before the scale was applied: multiply the float32 "
         "tensor by S first, then cast, as the backward pass does"),
        ({**right, "underflow": int((h == 0).sum())},
         "gradients that were already 0 were counted as lost: only g != 0 with h == 0 is an underflow"),
        ({**right, "overflow": int((product.abs() > 65504).sum())},
         "overflow was judged on the float32 product against 65504; FP16 rounds to nearest, so "
         "65519 is stored as 65504 and only 65520 and beyond become inf: count torch.isinf of the cast"),
        ({**right, "subnormal": int((h.abs() < 2.0 ** -14).sum())},
         "zeros were counted as subnormals: a subnormal is 0 < |h| < 2**-14"),
        ({**right, "underflow": int(((g != 0) & (product.abs() < 2.0 ** -24)).sum())},
         "underflow was judged on the float32 product against 2**-24; FP16 rounds values above "
         "2**-25 up to 2**-24, so let the cast decide which gradients become 0"),
    ]


def _counts_cause(g, scale: float, got) -> str:
    if type(got) is not dict:
        return "return one dict per tensor, with the keys numel, underflow, subnormal and overflow"
    if set(got) != set(KEYS):
        return f"each tensor's dict has exactly the keys {list(KEYS)}"
    if any(type(got[k]) is not int for k in KEYS):
        kinds = sorted({type(got[k]).__name__ for k in KEYS if type(got[k]) is not int})
        return (f"the counts came back as {', '.join(kinds)}; return Python ints (int(mask.sum())), "
                "counts, not shares")
    for counts, cause in _slip_counts(g, scale):
        if got == counts != reference_counts(g, scale):
            return cause
    wrong = [k for k in KEYS if got[k] != reference_counts(g, scale)[k]]
    return f"{', '.join(wrong)} differ: with h = (g * scale).to(torch.float16), follow the contract's definitions"


def _grads_text(grads: dict, scale: float) -> str:
    parts = [f"{name!r}: {render(g)}" for name, g in list(grads.items())[:4]]
    return "measure_scale({" + ", ".join(parts) + f"}}, 2**{int(math.log2(scale))})"


def _check_counts(learner, cases: list[tuple], checked: str) -> None:
    outcomes = learner.map("measure_scale", cases)
    for (grads, scale), outcome in zip(cases, outcomes):
        if not outcome.ok:
            raise outcome.raised
        got = outcome.value
        if type(got) is not dict or list(got) != list(grads):
            raise CheckFailed(checked, _grads_text(grads, scale), list(grads),
                              list(got) if type(got) is dict else got,
                              "return a dict with one entry per tensor, the keys of grads in their order")
        for name, g in grads.items():
            expected = reference_counts(g, scale)
            if not same(expected, got[name]):
                raise CheckFailed(checked, _grads_text({name: g}, scale), expected, got[name],
                                  _counts_cause(g, scale, got[name]))


def _tensor(values: list[float], rows: int):
    t = torch.tensor(values, dtype=torch.float32)
    return t.reshape(rows, -1) if rows > 1 and len(values) % rows == 0 and values else t


magnitudes = st.builds(lambda e, m, negative: (-m if negative else m) * 2.0 ** e,
                       st.integers(min_value=-50, max_value=18),
                       st.floats(min_value=1.0, max_value=2.0, exclude_max=True), st.booleans())
grad_values = st.one_of(st.just(0.0), magnitudes,
                        st.sampled_from([65504.0, 65519.0, 65520.0, 2.0 ** -25, 1.5 * 2.0 ** -25, 2.0 ** -24]))
tensor_specs = st.tuples(st.lists(grad_values, max_size=40), st.sampled_from([1, 2, 4]))
measure_specs = st.tuples(st.lists(tensor_specs, min_size=1, max_size=4), st.integers(min_value=-6, max_value=30))


def _measure_cases(specs: list[tuple]) -> list[tuple[dict, float]]:
    cases = []
    for tensors, k in specs:
        names = [f"out.{i}" if i % 2 else f"{i}.weight" for i in range(len(tensors))]
        cases.append(({name: _tensor(values, rows) for name, (values, rows) in zip(names, tensors)}, 2.0 ** k))
    return sorted(cases, key=lambda c: sum(g.numel() for g in c[0].values()))


@exercise("measure_scale", points=2)
def test_measure_scale_counts_like_torchs_float16_cast(learner, seed):
    """Per-tensor counts of underflow, subnormal and overflow equal torch's cast of g * S, on drawn tensors."""
    example = ({"out.0": _tensor([0.0, 2.0 ** -40, 2.0 ** -30, 1.0, 1024.0], 1)}, 2.0 ** 10)
    cases = [example] + _measure_cases(draw(measure_specs, n=60, seed=seed, key="03.measure"))
    _check_counts(learner, cases, "the counts equal those of (g * scale).to(torch.float16), tensor by tensor")


@exercise("measure_scale", points=1)
def test_measure_scale_lets_the_cast_decide_at_fp16s_edges(learner):
    """Values at FP16's edges (65504, 65519, 65520, 2^-25, 1.5 * 2^-25, 2^-24, 2^-14, zeros) at several scales."""
    edges = [65504.0, 65519.0, 65520.0, -65520.0, 65536.0, 2.0 ** -25, 1.5 * 2.0 ** -25, -(2.0 ** -24),
             2.0 ** -14, (1 - 2.0 ** -11) * 2.0 ** -14, 0.0, -0.0, 1.0]
    cases = [({"edge": _tensor([v * 2.0 ** -k for v in edges], 1)}, 2.0 ** k) for k in (0, 8, -3, 20)]
    _check_counts(learner, cases, "the FP16 cast decides what is lost, subnormal or inf, at the edges of its range")


@exercise("measure_scale", points=1)
def test_measure_scale_returns_ints_in_order_and_keeps_its_input(learner):
    """One dict of Python ints per tensor, in the input's key order; the input tensors are not modified."""
    learner.run("_probe = {'b': torch.tensor([[1.0, 2.0 ** -30], [65520.0, 0.0]]), 'a': torch.tensor([3.0]),\n"
                "          'c': torch.zeros(0)}\n")
    before = learner.get("_probe")
    learner.call("measure_scale", Ref("_probe"), 1024.0, store="_result")
    after, got = learner.get("_probe"), learner.get("_result")
    case = "measure_scale({'b': tensor([[1.0, 2**-30], [65520.0, 0.0]]), 'a': tensor([3.0]), 'c': tensor([])}, 1024.0)"
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if changed:
        raise CheckFailed("the input tensors are not modified", case + f", then grads[{changed[0]!r}]",
                          before[changed[0]], after[changed[0]],
                          "g * scale builds a new tensor; an in-place g.mul_(scale) changes the caller's")
    expected = {name: reference_counts(g, 1024.0) for name, g in before.items()}
    if type(got) is not dict or list(got) != list(expected):
        raise CheckFailed("one entry per tensor, in the input's key order", case, list(expected),
                          list(got) if type(got) is dict else got, "walk grads.items() and keep its order")
    for name in expected:
        if not same(expected[name], got[name]):
            raise CheckFailed("each entry is a dict of four Python ints", case, expected[name], got[name],
                              _counts_cause(before[name], 1024.0, got[name]))
