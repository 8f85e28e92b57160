"""Hidden checks for lesson 01, float formats.

format_limits is compared with torch.finfo for real formats and, for drawn
(exponent_bits, mantissa_bits) pairs, with exact rational arithmetic done here.
decode is compared with torch's own reinterpretation of real FP16, BF16, FP32
and E5M2 bit patterns (every FP16 and E5M2 pattern, drawn BF16/FP32 ones, and
the special patterns), computed here; signed zeros must keep their sign.
encode is compared, bit for bit, with torch's casts of float32 tensors to FP16,
BF16, E5M2 and E4M3fn, computed here: at every number of the format, every
midpoint between neighbours, the float32 values either side of each midpoint,
and drawn float32 values. For made-up formats, which torch lacks, the reference
is the nearest number found by exact search over the format's patterns.
"""

import math
import zlib
from fractions import Fraction

import numpy as np
import torch
from hypothesis import strategies as st

from grader.checkkit import CheckFailed, call_text, draw, exercise, fail_case
from grader.selfcheck.float_formats import is_nan_pattern, same_value

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


# -- encode (10 pts) -------------------------------------------------------------------

# (exponent_bits, mantissa_bits, fn) of each torch dtype the checks cast to.
LAYOUT = {torch.float16: (5, 10, False), torch.bfloat16: (8, 7, False),
          torch.float8_e5m2: (5, 2, False), torch.float8_e4m3fn: (4, 3, True)}
FLOAT32_MAX = float(torch.finfo(torch.float32).max)

# A batch of values crosses in one call; the reply is one float per value (the pattern,
# exact below 2^53), -1.0 where encode raised and -2.0 where it returned something that is
# not a pattern of the format. Those are re-run alone, so the learner sees their own
# exception or value.
ENCODE_ALL = """
def _grader_encode_all(xs, e, m, fn):
    out = []
    for x in xs:
        try:
            bits = encode(x, e, m, fn=True) if fn else encode(x, e, m)
        except Exception:
            out.append(-1.0)
            continue
        out.append(float(bits) if type(bits) is int and 0 <= bits < 1 << (1 + e + m) else -2.0)
    return out
"""
ENCODE_CHUNK = 70_000  # values per round trip: a slow but correct encode still fits the timeout


def torch_encode(xs: list[float], dtype: torch.dtype) -> list[int]:
    """torch's cast of float32 values to `dtype`, as unsigned bit patterns."""
    width = torch.finfo(dtype).bits
    stored = torch.tensor(xs, dtype=torch.float32).to(dtype).view(INT_OF_WIDTH[width])
    return (stored.to(torch.int64) & ((1 << width) - 1)).tolist()


def _float32_neighbours(values: torch.Tensor) -> torch.Tensor:
    """The float32 numbers just below and just above each (float32) value."""
    return torch.cat([torch.nextafter(values, torch.tensor(-math.inf)),
                      torch.nextafter(values, torch.tensor(math.inf))])


def boundary_values(dtype: torch.dtype) -> list[float]:
    """Every positive number of the format, every midpoint between neighbours (from zero to
    the first step beyond max), and the float32 values either side of each midpoint."""
    e, m, fn = LAYOUT[dtype]
    width = 1 + e + m
    patterns = torch.arange(1, 1 << (width - 1), dtype=torch.int32).to(INT_OF_WIDTH[width])
    values = patterns.view(dtype).double()
    values = values[torch.isfinite(values)]
    top = values[-1].item()
    beyond = top + 2.0 ** (math.frexp(top)[1] - 1 - m)     # the next step the format lacks
    grid = torch.cat([torch.zeros(1, dtype=torch.float64), values,
                      torch.tensor([beyond], dtype=torch.float64)])
    midpoints = (grid[:-1] + grid[1:]) / 2                 # exact in float64, and float32 values
    midpoints = midpoints[midpoints <= FLOAT32_MAX].float()
    probes = torch.cat([values.float(), midpoints, _float32_neighbours(midpoints)])
    return sorted(set(probes.double().tolist()) - {0.0})


def _some_negatives(values: list[float], stride: int) -> list[float]:
    return [-v for v in values[::stride]]


FLOAT32_VALUES = st.floats(width=32, allow_nan=False, allow_infinity=False)


def drawn_float32_values(seed, key: str, low: float, high: float) -> list[float]:
    """Hypothesis' float32 values (one draw, shared by every check), plus values spread
    log-uniformly over [low, high] with both signs."""
    drawn = draw(FLOAT32_VALUES, n=300, seed=seed, key="01.encode")
    rng = np.random.default_rng(zlib.crc32(f"{key}/{seed}".encode()))
    spread = np.exp(rng.uniform(math.log(low), math.log(high), 4000)).astype(np.float32)
    signs = rng.choice([-1.0, 1.0], spread.size).astype(np.float32)
    return drawn + (spread * signs).astype(np.float64).tolist()


def _pattern_value(pattern: int, e: int, m: int) -> float:
    """The magnitude of a finite pattern (sign bit ignored); exact, since e <= 8 and m <= 10 here."""
    bias = (1 << (e - 1)) - 1
    exponent, mantissa = (pattern >> m) & ((1 << e) - 1), pattern & ((1 << m) - 1)
    if exponent == 0:
        return math.ldexp(mantissa, 1 - bias - m)
    return math.ldexp((1 << m) + mantissa, exponent - bias - m)


def _largest_finite(e: int, m: int, fn: bool) -> int:
    all_ones = ((1 << e) - 1) << m
    return all_ones + (1 << m) - 2 if fn else all_ones - 1


def exact_encode(x: float, e: int, m: int, fn: bool) -> int:
    """The contract, by search: the nearest pattern, found by bisection over the (monotonic)
    positive patterns. Two neighbours of a format with m <= 10 add up exactly in float64, so
    comparing 2|x| with their sum decides nearest and ties exactly. NaN is not handled here."""
    sign = 1 << (e + m) if math.copysign(1.0, x) < 0 else 0
    largest = _largest_finite(e, m, fn)
    overflow = largest if fn else ((1 << e) - 1) << m
    a = abs(x)
    if math.isinf(a):
        return sign | overflow
    lo, hi = 0, largest
    while lo < hi:                                   # the largest pattern whose value is <= |x|
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _pattern_value(mid, e, m) <= a else (lo, mid - 1)
    below = _pattern_value(lo, e, m)
    if below == a:
        return sign | lo
    if lo == largest:
        if fn:
            return sign | largest
        above = math.ldexp(1.0, 1 << (e - 1))       # 2^(bias + 1), the step the format lacks: inf
    else:
        above = _pattern_value(lo + 1, e, m)
    if 2 * a < below + above or (2 * a == below + above and lo % 2 == 0):
        return sign | lo
    return sign | min(lo + 1, overflow)


def _encode_cause(x: float, e: int, m: int, fn: bool, expected: int, got) -> tuple[int, str]:
    """(priority, likely cause) of one wrong pattern; the lowest priority is shown first, so that a
    rounding slip in the normal range is named before its echoes at the edges of the range."""
    if type(got) is not int:
        return 0, f"return a Python int, the bit pattern (got {type(got).__name__})"
    if not 0 <= got < 1 << (1 + e + m):
        return 0, f"the pattern has 1 + e + m = {1 + e + m} bits: an int in [0, 2**{1 + e + m})"
    sign_bit = 1 << (e + m)
    if got ^ expected == sign_bit:
        return 1, ("the sign bit is wrong: it is the sign of x, also for -0.0 and for negative values "
                   "that round to zero (math.copysign(1.0, x) < 0; x < 0 misses -0.0)")
    want, have = expected & ~sign_bit, got & ~sign_bit
    all_ones, largest = ((1 << e) - 1) << m, _largest_finite(e, m, fn)
    if fn and is_nan_pattern(got, e, m, fn):
        return 6, ("torch 2.13 saturates fn formats: every magnitude above max, and +-inf, becomes "
                   "+-max, not NaN (NaN above 464 was older torch and ml_dtypes)")
    if fn and have == all_ones and want != all_ones:
        return 6, ("fn=True: the all-ones exponent field holds ordinary numbers (256 to 448 in "
                   "E4M3fn); only exponent and mantissa all ones is NaN, and there is no inf")
    if not fn and want == all_ones and have == largest:
        return 7, ("IEEE-style formats overflow to inf from the midpoint above max, "
                   "(2 - 2^-(m+1)) * 2^bias, upwards; only fn formats saturate")
    if not fn and have == all_ones:
        return 7, ("overflow starts at the midpoint above max, (2 - 2^-(m+1)) * 2^bias, "
                   "not at max itself: below it the nearest number is finite")
    subnormal = want >> m == 0 or have >> m == 0
    if abs(want - have) == 1 and max(want, have) <= largest:
        low, high = sorted((_pattern_value(want, e, m), _pattern_value(have, e, m)))
        if 2 * abs(x) == low + high:
            return 4 + 4 * subnormal, ("x is exactly halfway between two neighbours: a tie goes to the "
                                       "one whose mantissa field ends in 0 (ties to even)")
        if have < want:
            return 3 + 5 * subnormal, ("rounded towards zero (truncated): round to the *nearest* number, "
                                       "up when the dropped part is more than half the spacing")
        return 3 + 5 * subnormal, "rounded up although the lower neighbour is nearer: round to the nearest"
    if want & ((1 << m) - 1) == 0 and have >> m >= 1 and have == want - (1 << m):
        return 5, ("rounding up carried out of the mantissa (1.11...1 plus one spacing is 10.00...0): "
                   "the exponent field must grow by one and the mantissa become 0")
    if have == 0 and want <= 1 << m:
        return 8, ("below the smallest normal number come the subnormals (exponent field 0, spacing "
                   "2^(1 - bias - m)); only values nearer zero than half that spacing become zero")
    if subnormal:
        return 8, ("subnormals: exponent field 0, value = mantissa * 2^(1 - bias - m); the spacing "
                   "below the smallest normal number stays 2^(1 - bias - m)")
    return 9, ("round the exact value of x to the nearest number of the format (ties to even); the "
               "exponent field is the binade + bias, the mantissa field the number of spacings "
               "above 2^binade")


def _show_bits(bits, e: int, m: int) -> str:
    if type(bits) is not int:
        return bits
    width = 1 + e + m
    if not 0 <= bits < 1 << width:
        return bits
    text = f"{bits:0{width}b}"
    return f"{bits:#0{(width + 3) // 4 + 2}x} = {text[0]} {text[1:1 + e]} {text[1 + e:]}"


def as_float32(xs: list[float]) -> list[float]:
    """The values rounded to float32, the only kind of input the contract promises."""
    return torch.tensor(xs, dtype=torch.float32).double().tolist()


def _check_encode(learner, xs: list[float], e: int, m: int, fn: bool, expected: list, what: str) -> None:
    """Every value in one or a few round trips. Of the wrong patterns, the one whose likely cause
    ranks first (then the largest expected magnitude) is shown."""
    assert all(x == y or math.isnan(x) for x, y in zip(xs, as_float32(xs))), "float32 values only"
    learner.run(ENCODE_ALL)
    sign_bit = 1 << (e + m)
    shown = None
    for start in range(0, len(xs), ENCODE_CHUNK):
        chunk = xs[start:start + ENCODE_CHUNK]
        got = learner.call("_grader_encode_all", chunk, e, m, fn)
        if not isinstance(got, list) or len(got) != len(chunk):
            raise CheckFailed(what, f"encode on {len(chunk)} values", f"{len(chunk)} patterns", got,
                              "encode must return one int per call")
        for x, want, value in zip(chunk, expected[start:start + ENCODE_CHUNK], got):
            if value >= 0 and (value == want or math.isnan(x) and is_nan_pattern(int(value), e, m, fn)):
                continue
            bits = int(value) if value >= 0 else (   # re-run alone: the learner's own raise or value
                learner.call("encode", x, e, m, fn=True) if fn else learner.call("encode", x, e, m))
            if math.isnan(x):
                rank, cause = 2, "NaN gives a NaN pattern: all-ones exponent, non-zero mantissa (fn: all ones)"
            else:
                rank, cause = _encode_cause(x, e, m, fn, want, bits)
            key = (rank, -(want & ~sign_bit))
            if shown is None or key < shown[0]:
                shown = (key, x, want, bits, cause)
    if shown is not None:
        _, x, want, bits, cause = shown
        case = f"encode({x!r}, {e}, {m}{', fn=True' if fn else ''})"
        raise CheckFailed(what, case, "a NaN pattern" if math.isnan(x) else _show_bits(want, e, m),
                          _show_bits(bits, e, m), cause)


def _check_against_torch(learner, dtype: torch.dtype, xs: list[float], what: str) -> None:
    e, m, fn = LAYOUT[dtype]
    xs = as_float32(xs)
    _check_encode(learner, xs, e, m, fn, torch_encode(xs, dtype), what)


@exercise("encode", points=3)
def test_encode_matches_torch_at_every_fp16_number_and_rounding_boundary(learner, seed):
    """encode(x, 5, 10) equals torch's float32 -> float16 cast at every FP16 number, midpoint and
    float32 neighbour of a midpoint (both signs), and on drawn float32 values."""
    values = boundary_values(torch.float16)
    xs = values + _some_negatives(values, 5) + drawn_float32_values(seed, "01.enc16", 2.0 ** -27, 7e4)
    _check_against_torch(learner, torch.float16, xs,
                         "encode matches torch's cast to float16 bit for bit")


@exercise("encode", points=2)
def test_encode_matches_torch_at_every_bf16_number_and_rounding_boundary(learner, seed):
    """encode(x, 8, 7) equals torch's float32 -> bfloat16 cast at every BF16 number, midpoint and
    float32 neighbour of a midpoint (both signs), and on drawn float32 values."""
    values = boundary_values(torch.bfloat16)
    xs = values + _some_negatives(values, 5) + drawn_float32_values(seed, "01.enc_bf16", 1e-40, 3.4e38)
    _check_against_torch(learner, torch.bfloat16, xs,
                         "encode matches torch's cast to bfloat16 bit for bit")


@exercise("encode", points=1)
def test_encode_matches_torch_on_fp8_e5m2(learner, seed):
    """encode(x, 5, 2) equals torch's float32 -> float8_e5m2 cast at every E5M2 number, midpoint and
    neighbour (both signs), on drawn values and beyond the top (inf)."""
    values = boundary_values(torch.float8_e5m2)
    xs = values + [-v for v in values] + drawn_float32_values(seed, "01.enc_e5m2", 2.0 ** -18, 1e6)
    _check_against_torch(learner, torch.float8_e5m2, xs,
                         "encode matches torch's cast to float8_e5m2 bit for bit")


@exercise("encode", points=2)
def test_encode_fn_matches_torch_on_fp8_e4m3fn_with_saturation(learner, seed):
    """encode(x, 4, 3, fn=True) equals torch 2.13's float32 -> float8_e4m3fn cast at every E4M3fn number,
    midpoint and neighbour (both signs), on drawn values, and saturates above 448 and at +-inf."""
    values = boundary_values(torch.float8_e4m3fn)
    beyond = [449.0, 464.0, 465.0, 479.0, 480.0, 481.0, 1e4, 3e38, FLOAT32_MAX, math.inf]
    xs = values + [-v for v in values] + beyond + [-v for v in beyond]
    xs += drawn_float32_values(seed, "01.enc_e4m3", 2.0 ** -11, 1e5)
    _check_against_torch(learner, torch.float8_e4m3fn, xs,
                         "encode(..., fn=True) matches torch 2.13's cast to float8_e4m3fn bit for bit")


@exercise("encode", points=1)
def test_encode_keeps_the_sign_of_zeros_infinities_and_nans(learner):
    """encode gives +-0 with the sign of x (also after underflow), +-inf or saturation, and a NaN pattern
    for NaN, in FP16, BF16, E5M2 and E4M3fn."""
    for dtype, (e, m, fn) in LAYOUT.items():
        xs = as_float32([0.0, -0.0, 2.0 ** -149, -(2.0 ** -149), -1e-30, math.inf, -math.inf,
                         math.nan, -math.nan])
        name = str(dtype).removeprefix("torch.")
        _check_encode(learner, xs, e, m, fn, torch_encode(xs, dtype),
                      f"encode keeps the sign of zeros and infinities and encodes NaN as NaN in {name}")


MADE_UP_FORMATS = st.tuples(st.integers(2, 8), st.integers(1, 10), st.booleans())


@exercise("encode", points=1)
def test_encode_works_for_made_up_formats(learner, seed):
    """encode follows the contract for drawn formats torch lacks (2 <= e <= 8, 1 <= m <= 10, fn or not),
    against the nearest number found by exact search."""
    formats = [(3, 2, False), (2, 1, False), (3, 2, True), (6, 4, False)]
    formats += [f for f in draw(MADE_UP_FORMATS, n=6, seed=seed, key="01.formats") if f not in formats]
    for e, m, fn in formats:
        bias = (1 << (e - 1)) - 1
        top = float(_pattern_value(_largest_finite(e, m, fn), e, m))
        xs = drawn_float32_values(seed, f"01.enc{e}.{m}", 2.0 ** max(-140, -bias - m - 2), min(4 * top, 3e38))
        xs = as_float32([x for x in xs if abs(x) < 2.0 ** (bias + 2)][:400])
        _check_encode(learner, xs, e, m, fn, [exact_encode(x, e, m, fn) for x in xs],
                      f"encode follows the contract for a made-up format (e={e}, m={m}, fn={fn})")
