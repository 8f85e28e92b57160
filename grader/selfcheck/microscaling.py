"""Self-checks for lesson 09 (FP8 and 4-bit for real): `round_to_e2m1` and `mx_quantize`.

Every case is small enough to follow by hand. For the block [3.0, -1.0, 0.1, 0, ...]
in E4M3: amax = 3, floor(log2 3) = 1, the shared exponent is 1 - 8 = -7, the
scale 2**-7 (E8M0 code 120), and the elements are 3 * 128 = 384, -128 and
0.1 * 128 = 12.8, which rounds to 13.
"""

from __future__ import annotations

import torch

from grader.selfcheck.core import SelfCheck

__all__ = ["check_round_to_e2m1", "check_mx_quantize", "check_microscaling"]

_RNE = ("round to the nearest of 0, 0.5, 1, 1.5, 2, 3, 4, 6; on a tie pick the value whose mantissa "
        "bit is 0 (0, 1, 2, 4, 6... are even): torch.round on |x| / spacing rounds half to even.")
_FLOOR = ("shared exponent = floor(log2(amax)) - emax, with emax 8 for E4M3, 15 for E5M2 and 2 for "
          "E2M1; read floor(log2(amax)) exactly with torch.frexp (exponent - 1).")


def _float32_below(x: float) -> float:
    """The largest float32 below x."""
    return float(torch.nextafter(torch.tensor(x), torch.tensor(0.0)))


def _values(t) -> list:
    return [float(v) for v in t.float().reshape(-1)] if isinstance(t, torch.Tensor) else t


def _codes(scales) -> list:
    if isinstance(scales, torch.Tensor) and scales.dtype == torch.float8_e8m0fnu:
        return [int(c) for c in scales.view(torch.uint8).reshape(-1)]
    return f"not an E8M0 tensor: {getattr(scales, 'dtype', type(scales).__name__)}"


def check_round_to_e2m1(round_to_e2m1) -> None:
    with SelfCheck("round_to_e2m1") as sc:
        ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
        sc.compare("ties go to the even neighbour", [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
                   _values(sc.call(round_to_e2m1, ties)), cause=_RNE)
        sc.compare("other values go to the nearest", [0.5, 1.5, 3.0, 4.0, 6.0, -0.5, -3.0],
                   _values(sc.call(round_to_e2m1, torch.tensor([0.3, 1.4, 2.9, 4.9, 5.1, -0.3, -2.6]))),
                   cause=_RNE)
        sc.compare("beyond 6 saturates to 6", [6.0, 6.0, 6.0, -6.0],
                   _values(sc.call(round_to_e2m1, torch.tensor([6.0, 7.0, 100.0, -8.0]))),
                   cause="clamp |x| to 6 first: E2M1's largest value is 6 = 1.5 * 2**2.")
        x = torch.tensor([[0.3, -7.0], [2.2, 0.0]])
        kept = x.clone()
        got = sc.call(round_to_e2m1, x)
        sc.compare("float32 result with x's shape", "torch.float32 [2, 2]",
                   f"{getattr(got, 'dtype', type(got).__name__)} {list(getattr(got, 'shape', []))}",
                   cause="work elementwise on float32 and return a tensor shaped like x.")
        sc.compare("x is not modified", True, bool(torch.equal(x, kept)),
                   cause="use x.abs() and new tensors, not in-place operations on x.")


def check_mx_quantize(mx_quantize) -> None:
    with SelfCheck("mx_quantize") as sc:
        x = torch.tensor([3.0, -1.0, 0.1] + [0.0] * 29)
        kept = x.clone()
        scales, elements = sc.call(mx_quantize, x, "e4m3")
        sc.compare("E4M3: amax 3 gives 2**(1 - 8), E8M0 code 120", [120], _codes(scales), cause=_FLOOR)
        sc.compare("E4M3: elements are x * 2**7, rounded", [384.0, -128.0, 13.0, 0.0],
                   _values(elements)[:4],
                   cause="divide by the scale, clamp to +-448, then .to(torch.float8_e4m3fn).float().")
        sc.compare("x is not modified", True, bool(torch.equal(x, kept)),
                   cause="compute on new tensors; do not divide x in place.")
        scales, elements = sc.call(mx_quantize, torch.tensor([7.5] + [1.0] * 31), "e4m3")
        sc.compare("7.5 * 2**6 = 480 saturates to 448", [121, 448.0, 64.0],
                   _codes(scales) + _values(elements)[:2],
                   cause="the floor puts amax / scale in [256, 512), above E4M3's 448: clamp before "
                         "casting.")
        below = _float32_below(32.0)
        scales, _ = sc.call(mx_quantize, torch.tensor([below] + [1.0] * 31), "e4m3")
        sc.compare(f"amax {below!r} (just under 2**5): 2**(4 - 8)", [123], _codes(scales),
                   cause="torch.log2 in float32 rounds this up to exactly 5.0; use torch.frexp, "
                         "which reads the exponent bits exactly.")
        scales, elements = sc.call(mx_quantize, torch.zeros(32), "e5m2")
        sc.compare("an all-zero block gets 2**-127 (code 0) and zeros", [0, 0.0],
                   _codes(scales) + _values(elements)[:1],
                   cause="log2(0) does not exist: the spec clamps the exponent to -127.")
        scales, elements = sc.call(mx_quantize, torch.tensor([5.0, 1.3, -0.7, 0.2] + [0.0] * 28), "e2m1")
        sc.compare("E2M1: amax 5 gives 2**(2 - 2) = 1, then E2M1 rounding", [127, 4.0, 1.5, -0.5, 0.0],
                   _codes(scales) + _values(elements)[:4],
                   cause="emax is 2 for E2M1; round x / scale with your round_to_e2m1 rule.")
        scales, elements = sc.call(mx_quantize, torch.ones(2, 64), "e4m3", 16)
        sc.compare("block=16 on a 2x64 tensor: scales 2x4 (E8M0), elements 2x64 float32",
                   "float8_e8m0fnu [2, 4] float32 [2, 64]",
                   f"{str(getattr(scales, 'dtype', '?')).removeprefix('torch.')} "
                   f"{list(getattr(scales, 'shape', []))} "
                   f"{str(getattr(elements, 'dtype', '?')).removeprefix('torch.')} "
                   f"{list(getattr(elements, 'shape', []))}",
                   cause="one scale per `block` values along the last dimension; return "
                         "(e + 127).to(torch.uint8).view(torch.float8_e8m0fnu) and float32 elements.")
        try:
            mx_quantize(torch.ones(32), "e3m4")
            raised = "nothing"
        except NotImplementedError:
            raised = "NotImplementedError"
        except Exception as exc:  # noqa: BLE001 - any other raise becomes a row
            raised = type(exc).__name__
        sc.compare("an unknown elem_format raises ValueError", "ValueError", raised,
                   cause="accept exactly 'e4m3', 'e5m2' and 'e2m1'; raise ValueError otherwise.")


def check_microscaling(round_to_e2m1, mx_quantize) -> None:
    """Both tables of Exercise 9.1, one per function."""
    check_round_to_e2m1(round_to_e2m1)
    check_mx_quantize(mx_quantize)
