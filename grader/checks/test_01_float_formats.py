"""Hidden checks for lesson 01, float formats.

format_limits is compared with torch.finfo for real formats and, for drawn
(exponent_bits, mantissa_bits) pairs, with exact rational arithmetic done here.
decode is compared with torch's own reinterpretation of real FP16, BF16, FP32
and E5M2 bit patterns (every FP16 and E5M2 pattern, drawn BF16/FP32 ones, and
the special patterns), computed here; signed zeros must keep their sign.
"""

import math
from fractions import Fraction

import torch
from hypothesis import strategies as st

from grader.checkkit import CheckFailed, call_text, draw, exercise, fail_case
from grader.selfcheck.float_formats import same_value

KEYS = ("max", "min_normal", "min_subnormal", "eps")
INT_OF_WIDTH = {8: torch.int8, 16: torch.int16, 32: torch.int32}


# -- references, computed in this process ----------------------------------------

def exact_limits(e: int, m: int) -> dict:
    """The IEEE-style limits from exact fractions, rounded once to float."""
    bias = 2 ** (e - 1) - 1
    two = Fraction(2)
    return {"max": float((2 - Fraction(1, 2 ** m)) * two ** bias),
            "min_normal": float(two ** (1 - bias)),
            "min_subnormal": float(two ** (1 - bias - m)),
            "eps": float(Fraction(1, 2 ** m))}


def torch_decode(patterns: list[int], dtype: torch.dtype) -> list[float]:
    """torch's reading of raw bit patterns as `dtype`, widened to float64."""
    width = torch.finfo(dtype).bits
    signed = [p - (1 << width) if p >> (width - 1) else p for p in patterns]
    return torch.tensor(signed, dtype=INT_OF_WIDTH[width]).view(dtype).double().tolist()


def finfo_limits(dtype: torch.dtype) -> dict:
    fi = torch.finfo(dtype)
    smallest_subnormal = torch_decode([1], dtype)[0]  # finfo has no field for it
    return {"max": float(fi.max), "min_normal": float(fi.smallest_normal),
            "min_subnormal": smallest_subnormal, "eps": float(fi.eps)}


# -- format_limits (5 pts) ---------------------------------------------------------

def _number(value):
    """A real number as float (ints and numpy scalars allowed here; types have their own check)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "dtype"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _limits_cause(e: int, m: int, key: str, got) -> str:
    bias = 2 ** (e - 1) - 1
    g = _number(got)
    if key == "max":
        if g == (2 - 2.0 ** -m) * 2.0 ** (bias + 1):
            return ("the all-ones exponent is reserved for inf/NaN, so the largest normal exponent "
                    "is (2^e - 2) - bias = bias; max = (2 - 2^-m) * 2^bias")
        if g == 2.0 ** (bias + 1) or g == 2.0 ** bias:
            return "the largest mantissa is 1.11...1 = 2 - 2^-m, not 1 or 2; max = (2 - 2^-m) * 2^bias"
        return "max = (2 - 2^-m) * 2^bias with bias = 2^(e-1) - 1"
    if key == "min_normal":
        if g == 2.0 ** -bias:
            return "exponent field 0 is for subnormals; the smallest normal uses field 1: 2^(1 - bias)"
        return "min_normal = 2^(1 - bias) with bias = 2^(e-1) - 1"
    if key == "min_subnormal":
        if g == 2.0 ** (-bias - m):
            return "subnormals share the exponent 1 - bias (not -bias): min_subnormal = 2^(1 - bias - m)"
        return "min_subnormal = 2^(1 - bias - m): the last mantissa bit at the subnormal exponent"
    if g == 2.0 ** -(m + 1):
        return "that is the unit roundoff (half of eps); eps = 2^-m is the gap from 1.0 to the next number"
    return "eps = 2^-m, the gap between 1.0 and the next representable number"


def _check_limits(learner, cases: list[tuple], expected_of, what: str) -> None:
    outcomes = learner.map("format_limits", cases)
    for args, outcome in zip(cases, outcomes):
        expected = expected_of(*args)
        if not outcome.ok:
            fail_case(what, "format_limits", args, expected, outcome, "")
        got = outcome.value
        if not isinstance(got, dict):
            raise CheckFailed(what, call_text("format_limits", args), expected, got,
                              "return a dict with the keys 'max', 'min_normal', 'min_subnormal', 'eps'")
        for key in KEYS:
            if _number(got.get(key)) != expected[key]:
                raise CheckFailed(f"{what}: {key!r}", call_text("format_limits", args),
                                  expected[key], got.get(key), _limits_cause(*args, key, got.get(key)))


@exercise("format_limits", points=1)
def test_limits_returns_a_dict_of_four_python_floats(learner):
    """format_limits returns a dict with exactly max, min_normal, min_subnormal and eps, all Python floats."""
    for args in [(5, 10), (8, 7)]:
        got = learner.call("format_limits", *args)
        if not isinstance(got, dict) or sorted(got) != sorted(KEYS):
            shown = sorted(got) if isinstance(got, dict) else got
            raise CheckFailed("the result is a dict with exactly the four keys",
                              call_text("format_limits", args), sorted(KEYS), shown,
                              "return {'max': ..., 'min_normal': ..., 'min_subnormal': ..., 'eps': ...}")
        bad = {k: v for k, v in got.items() if type(v) is not float}
        if bad:
            raise CheckFailed("every value is a Python float", call_text("format_limits", args),
                              "floats", {k: f"{v!r} ({type(v).__name__})" for k, v in bad.items()},
                              "wrap each value in float(...): 2**bias is an int, and np.ldexp or "
                              "torch give numpy floats or tensors")


@exercise("format_limits", points=2)
def test_limits_match_torch_finfo_for_fp32_fp16_bf16(learner):
    """format_limits agrees with torch.finfo for FP32 (8, 23), FP16 (5, 10) and BF16 (8, 7)."""
    dtypes = {(8, 23): torch.float32, (5, 10): torch.float16, (8, 7): torch.bfloat16}
    _check_limits(learner, list(dtypes), lambda e, m: finfo_limits(dtypes[(e, m)]),
                  "format_limits matches torch.finfo for FP32, FP16 and BF16")


@exercise("format_limits", points=1)
def test_limits_match_torch_finfo_for_fp8_e5m2(learner):
    """format_limits agrees with torch.finfo for FP8 E5M2 (5, 2), an IEEE-style 8-bit format."""
    _check_limits(learner, [(5, 2)], lambda e, m: finfo_limits(torch.float8_e5m2),
                  "format_limits matches torch.finfo for FP8 E5M2")


@exercise("format_limits", points=1)
def test_limits_match_exact_math_on_drawn_formats(learner, seed):
    """format_limits is exact for any 2 <= exponent_bits <= 10 and 1 <= mantissa_bits <= 52."""
    pairs = st.tuples(st.integers(2, 10), st.integers(1, 52))
    edges = [(2, 1), (2, 52), (10, 1), (10, 52), (3, 2), (4, 3), (6, 9), (7, 30)]
    cases = edges + [p for p in draw(pairs, n=40, seed=seed, key="01.limits") if p not in edges]
    _check_limits(learner, cases, exact_limits,
                  "format_limits matches exact arithmetic for made-up formats")


# -- decode (5 pts) ------------------------------------------------------------------

def _decode_cause(bits: int, e: int, m: int, expected: float, got) -> str:
    if type(got) is not float:
        return f"return a Python float (got {type(got).__name__}); wrap the value in float(...)"
    exponent = (bits >> m) & ((1 << e) - 1)
    if math.isnan(expected):
        return "an all-ones exponent with a non-zero mantissa is NaN"
    if math.isinf(expected):
        return "an all-ones exponent with a zero mantissa is ±inf (keep the sign)"
    if expected == 0.0 and got == 0.0:
        return "the sign of zero matters: sign bit set gives -0.0 (e.g. math.copysign(0.0, -1.0))"
    if got == -expected:
        return "the sign is wrong: the sign bit is the top one, (bits >> (e + m)) & 1"
    if exponent == 0:
        return ("exponent field 0 is subnormal: value = 2^(1 - bias) * M / 2^m, with no implicit 1 "
                "and exponent 1 - bias (not -bias)")
    return "a normal number is (-1)^s * 2^(E - bias) * (1 + M / 2^m), with bias = 2^(e-1) - 1"


# Thousands of patterns travel in one call to this helper, whose reply is a packed
# list of floats; learner.map would answer per item and is ~15x slower here. A
# pattern whose decode raised comes back as None and is re-run alone, so the
# learner sees their own exception.
DECODE_ALL = """
def _grader_decode_all(patterns, e, m):
    out = []
    for p in patterns:
        try:
            out.append(decode(p, e, m))
        except Exception:
            out.append(None)
    return out
"""


def _check_decode(learner, patterns: list[int], dtype: torch.dtype, e: int, m: int, what: str) -> None:
    expected = torch_decode(patterns, dtype)
    learner.run(DECODE_ALL)
    got = learner.call("_grader_decode_all", patterns, e, m)
    if not isinstance(got, list) or len(got) != len(patterns):
        raise CheckFailed(what, f"decode on {len(patterns)} patterns", f"{len(patterns)} floats", got,
                          "decode must return one float per call; do not keep state between calls")
    for p, want, value in zip(patterns, expected, got):
        if not same_value(want, value):
            args = (p, e, m)
            if value is None:
                value = learner.call("decode", *args)   # raises the learner's own exception
            shown = (f"{call_text('decode', args)}, i.e. bits {p:#0{(1 + e + m + 3) // 4 + 2}x} "
                     f"= {p:0{1 + e + m}b}")
            raise CheckFailed(what, shown, want, value, _decode_cause(*args, want, value))


def _specials(e: int, m: int) -> list[int]:
    """±0, the smallest and largest subnormals and normals, ±inf and NaNs."""
    top, all_ones = 1 << (e + m), ((1 << e) - 1) << m
    mant = (1 << m) - 1
    positive = [0, 1, mant, 1 << m, all_ones - 1, all_ones, all_ones | 1, all_ones | mant,
                (((1 << (e - 1)) - 1) << m)]  # the last one is 1.0
    return positive + [top | p for p in positive]


@exercise("decode", points=1)
def test_decode_handles_signed_zero_inf_and_nan(learner):
    """decode gives ±0.0 with the right sign, ±inf and NaN for FP16, BF16, FP32 and E5M2 special patterns."""
    for dtype, e, m in [(torch.float16, 5, 10), (torch.bfloat16, 8, 7), (torch.float32, 8, 23),
                        (torch.float8_e5m2, 5, 2)]:
        _check_decode(learner, _specials(e, m), dtype, e, m,
                      f"decode reads the special {dtype} patterns like torch does".replace("torch.", ""))


@exercise("decode", points=2)
def test_decode_matches_torch_on_every_fp16_pattern(learner):
    """decode agrees with torch on all 65536 FP16 bit patterns (normals, subnormals, zeros, inf, NaN)."""
    _check_decode(learner, list(range(1 << 16)), torch.float16, 5, 10,
                  "decode agrees with torch on all 65536 FP16 patterns")


@exercise("decode", points=1)
def test_decode_matches_torch_on_drawn_bf16_patterns(learner, seed):
    """decode agrees with torch on drawn BF16 bit patterns (e=8, m=7)."""
    drawn = draw(st.integers(0, 0xFFFF), n=300, seed=seed, key="01.bf16")
    strided = list(range(0, 1 << 16, 37))  # every exponent, both signs
    _check_decode(learner, sorted(set(drawn + strided)), torch.bfloat16, 8, 7,
                  "decode agrees with torch on BF16 patterns")


@exercise("decode", points=1)
def test_decode_matches_torch_on_fp32_and_e5m2_patterns(learner, seed):
    """decode agrees with torch on drawn FP32 patterns (e=8, m=23) and all 256 FP8 E5M2 patterns (e=5, m=2)."""
    _check_decode(learner, list(range(256)), torch.float8_e5m2, 5, 2,
                  "decode agrees with torch on all 256 FP8 E5M2 patterns")
    fp32 = st.one_of(st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 23 - 1),
                     st.integers(2 ** 31, 2 ** 31 + 2 ** 23 - 1))  # the last two: subnormals
    drawn = draw(fp32, n=200, seed=seed, key="01.fp32")
    _check_decode(learner, sorted(set(drawn)), torch.float32, 8, 23,
                  "decode agrees with torch on FP32 patterns")
