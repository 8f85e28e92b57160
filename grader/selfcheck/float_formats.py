"""Self-checks for lesson 01, float formats."""

from __future__ import annotations

import math

from grader.selfcheck.core import SelfCheck

INF, NAN = float("inf"), float("nan")
KEYS = ["eps", "max", "min_normal", "min_subnormal"]

# (exponent_bits, mantissa_bits) -> the four limits, written out by hand.
LIMITS = {
    (5, 10): {"max": 65504.0, "min_normal": 2.0 ** -14, "min_subnormal": 2.0 ** -24, "eps": 2.0 ** -10},
    (8, 7): {"max": (2 - 2.0 ** -7) * 2.0 ** 127, "min_normal": 2.0 ** -126,
             "min_subnormal": 2.0 ** -133, "eps": 2.0 ** -7},
    (2, 1): {"max": 3.0, "min_normal": 1.0, "min_subnormal": 0.5, "eps": 0.5},
}
LIMIT_CAUSES = {
    "max": "max = (2 - 2^-m) * 2^bias: the largest mantissa 1.11...1 times the largest normal "
           "exponent; the all-ones exponent is reserved for inf/NaN, so that exponent is "
           "(2^e - 2) - bias = bias",
    "min_normal": "min_normal = 2^(1 - bias): exponent field 1 is the smallest normal one",
    "min_subnormal": "min_subnormal = 2^(1 - bias - m): the last mantissa bit at the subnormal "
                     "exponent 1 - bias",
    "eps": "eps = 2^-m, the gap between 1.0 and the next number (2^-(m+1) is the unit roundoff, "
           "half of eps)",
}


def check_format_limits(format_limits) -> None:
    with SelfCheck("format_limits") as sc:
        first = sc.call(format_limits, 5, 10)
        keys = sorted(first) if isinstance(first, dict) else first
        if not sc.compare("a dict with the four keys", KEYS, keys,
                          cause="return {'max': ..., 'min_normal': ..., 'min_subnormal': ..., 'eps': ...}"):
            return
        types = sorted({type(v).__name__ for v in first.values()})
        sc.compare("every value is a Python float", ["float"], types,
                   cause="wrap each value in float(...); 2**bias is an int and np.ldexp gives numpy floats")
        for (e, m), name in (((5, 10), "FP16"), ((8, 7), "BF16"), ((2, 1), "made-up IEEE-style")):
            got = first if (e, m) == (5, 10) else sc.call(format_limits, e, m)
            for key in ("max", "min_normal", "min_subnormal", "eps"):
                value = got.get(key) if isinstance(got, dict) else None
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = float(value)  # the type has its own row above
                sc.compare(f"{name} (e={e}, m={m}) {key}", LIMITS[(e, m)][key], value,
                           cause=LIMIT_CAUSES[key])


def same_value(expected: float, got) -> bool:
    """Equal floats, NaN matching NaN, and the sign of zero must agree."""
    if type(got) is not float:
        return False
    if math.isnan(expected):
        return math.isnan(got)
    return got == expected and math.copysign(1.0, got) == math.copysign(1.0, expected)


DECODE_CASES = [
    # (bits, e, m, expected, what it shows, likely cause when wrong)
    (0x3C00, 5, 10, 1.0, "FP16 0x3C00 is 1.0", "value = 2^(E - bias) * (1 + M / 2^m) with bias = 2^(e-1) - 1"),
    (0xC500, 5, 10, -5.0, "FP16 0xC500 is -5.0 (sign bit set)",
     "the sign is the top bit: (bits >> (e + m)) & 1; multiply by -1 when it is set"),
    (0x7BFF, 5, 10, 65504.0, "FP16 0x7BFF is the max, 65504.0",
     "the mantissa field is the low m bits: bits & ((1 << m) - 1)"),
    (0x0400, 5, 10, 2.0 ** -14, "FP16 0x0400 is the smallest normal 2^-14",
     "the exponent field is (bits >> m) & ((1 << e) - 1), and bias = 2^(e-1) - 1 = 15"),
    (0x0001, 5, 10, 2.0 ** -24, "FP16 0x0001 is the smallest subnormal 2^-24",
     "exponent field 0 means subnormal: 2^(1 - bias) * (M / 2^m), with no implicit leading 1"),
    (0x0000, 5, 10, 0.0, "FP16 0x0000 is +0.0", "an all-zero pattern is zero"),
    (0x8000, 5, 10, -0.0, "FP16 0x8000 is -0.0 (negative zero)",
     "apply the sign to zero too: -0.0, e.g. with math.copysign or (-1.0) ** s * value"),
    (0x7C00, 5, 10, INF, "FP16 0x7C00 is inf", "all-ones exponent with mantissa 0 is infinity"),
    (0xFC00, 5, 10, -INF, "FP16 0xFC00 is -inf", "infinity keeps its sign"),
    (0x7E00, 5, 10, NAN, "FP16 0x7E00 is NaN", "all-ones exponent with a non-zero mantissa is NaN"),
    (0x3F80, 8, 7, 1.0, "BF16 0x3F80 is 1.0", "use the e and m you are given, not FP16's 5 and 10"),
    (0x7B, 5, 2, 57344.0, "E5M2 0x7B is its max, 57344.0", "use the e and m you are given"),
    (0b0101, 2, 1, 3.0, "e=2, m=1: 0b0101 is 2^(2-1) * 1.5 = 3.0", "use the e and m you are given"),
]


def check_decode(decode) -> None:
    with SelfCheck("decode") as sc:
        for bits, e, m, expected, what, cause in DECODE_CASES:
            got = sc.call(decode, bits, e, m)
            sc.row(what, expected, got, same_value(expected, got),
                   cause if type(got) is float or got is None else
                   f"return a Python float (got {type(got).__name__}); wrap the result in float(...)")


def is_nan_pattern(bits, e: int, m: int, fn: bool) -> bool:
    """Whether `bits` is a NaN of the format: all-ones exponent and a non-zero mantissa (IEEE-style),
    or all-ones exponent and mantissa (fn formats), with either sign."""
    if type(bits) is not int or not 0 <= bits < 1 << (1 + e + m):
        return False
    exponent, mantissa = (bits >> m) & ((1 << e) - 1), bits & ((1 << m) - 1)
    if fn:
        return exponent == (1 << e) - 1 and mantissa == (1 << m) - 1
    return exponent == (1 << e) - 1 and mantissa != 0


TIES = "a tie (exactly halfway) goes to the neighbour whose mantissa field ends in 0"
ENCODE_CASES = [
    # (x, e, m, fn, expected bits, what it shows, likely cause when wrong)
    (1.0, 5, 10, False, 0x3C00, "FP16 1.0 is 0x3C00", "exponent field = binade + bias; 1.0 has mantissa 0"),
    (-2.5, 5, 10, False, 0xC100, "FP16 -2.5 is 0xC100 (sign bit set)",
     "the sign bit is the top bit, 1 << (e + m), set for negative x"),
    (0.1, 5, 10, False, 0x2E66, "FP16 0.1 rounds to the nearest number, 0x2E66",
     "0.1 lies in the binade [2^-4, 2^-3), where FP16's spacing is 2^-14: round 0.1 / 2^-14 to the "
     "nearest integer, not down"),
    (65519.0, 5, 10, False, 0x7BFF, "FP16 65519 rounds down to the max, 65504 (0x7BFF)",
     "below the midpoint 65520 the nearest number is 65504, which is finite"),
    (65520.0, 5, 10, False, 0x7C00, "FP16 65520, the midpoint above max, is inf (0x7C00)",
     "a tie above max goes to the even neighbour 2^16, which the format lacks: inf"),
    (1 + 2.0 ** -11, 5, 10, False, 0x3C00, "FP16 1 + 2^-11 (a tie) rounds to even: 1.0", TIES),
    (1 + 3 * 2.0 ** -11, 5, 10, False, 0x3C02, "FP16 1 + 3*2^-11 (a tie) rounds to even: 0x3C02", TIES),
    (2.0 ** -24, 5, 10, False, 0x0001, "FP16 2^-24 is the smallest subnormal, 0x0001",
     "below 2^-14 the spacing stays 2^-24: the exponent field is 0 and the mantissa counts spacings"),
    (1.5 * 2.0 ** -25, 5, 10, False, 0x0001, "FP16 1.5*2^-25 rounds up to 2^-24",
     "subnormals round on the fixed grid of spacing 2^-24, to nearest"),
    (2.0 ** -25, 5, 10, False, 0x0000, "FP16 2^-25 (a tie with zero) rounds to +0.0", TIES + " (zero is even)"),
    (-1e-30, 5, 10, False, 0x8000, "FP16 -1e-30 underflows to -0.0 (0x8000)",
     "keep the sign bit when the result is zero"),
    (-0.0, 5, 10, False, 0x8000, "FP16 -0.0 is 0x8000",
     "-0.0 has its sign bit set: math.copysign(1.0, x) < 0 tells it from 0.0, x < 0 does not"),
    (-math.inf, 5, 10, False, 0xFC00, "FP16 -inf is 0xFC00", "all-ones exponent, mantissa 0, sign bit set"),
    (1 / 3, 8, 7, False, 0x3EAB, "BF16 1/3 rounds to 0x3EAB", "use the e and m you are given, not FP16's"),
    (61440.0, 5, 2, False, 0x7C, "E5M2 61440, the midpoint above max, is inf (0x7C)",
     "IEEE-style formats overflow from the midpoint above max, ties included"),
    (448.0, 4, 3, True, 0x7E, "E4M3fn 448 is its max, 0x7E",
     "fn=True: the all-ones exponent field holds numbers; only mantissa all ones is NaN"),
    (1000.0, 4, 3, True, 0x7E, "E4M3fn 1000 saturates to 448 (0x7E)",
     "fn=True: every magnitude above max saturates to max, as torch 2.13 casts"),
    (-math.inf, 4, 3, True, 0xFE, "E4M3fn -inf saturates to -448 (0xFE)",
     "fn formats have no inf: +-inf saturates to +-max"),
    (3.0, 2, 1, False, 0b0101, "e=2, m=1: 3.0 is 0b0101", "use the e and m you are given"),
]


def _encode_call(encode, x: float, e: int, m: int, fn: bool):
    """A call as the lesson writes it: fn is passed (by keyword) only for fn formats."""
    return (lambda: encode(x, e, m, fn=True)) if fn else (lambda: encode(x, e, m))


def check_encode(encode) -> None:
    with SelfCheck("encode") as sc:
        for x, e, m, fn, expected, what, cause in ENCODE_CASES:
            got = sc.call(_encode_call(encode, x, e, m, fn))
            shown = f"{got:#x}" if type(got) is int else got
            sc.row(what, f"{expected:#x}", shown, type(got) is int and got == expected,
                   cause if type(got) is int else
                   f"return a Python int (got {type(got).__name__}), the bit pattern")
        for e, m, fn, name in [(5, 10, False, "FP16"), (4, 3, True, "E4M3fn")]:
            got = sc.call(_encode_call(encode, math.nan, e, m, fn))
            sc.row(f"{name} NaN gives a NaN pattern", "a NaN pattern",
                   f"{got:#x}" if type(got) is int else got, is_nan_pattern(got, e, m, fn),
                   "NaN: all-ones exponent with a non-zero mantissa" if not fn else
                   "fn formats have one NaN per sign: exponent and mantissa all ones")
