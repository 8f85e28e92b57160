"""Self-checks for lesson 06 (BF16 and FP8): `fp8_scale` and `quantize_fp8`.

The cases are small and written out by hand, so that each row of the table can
be checked with pencil and paper: 448 / 3.5 = 128, and so on.
"""

from __future__ import annotations

import math

import torch

from grader.selfcheck.core import SelfCheck

_TE_RULE = ("amax = the largest entry of the whole history (not the last one); if it is finite and > 0 return (fp8_max / amax) / 2**margin, "
            "otherwise 1.0.")


def check_fp8_scale(fp8_scale) -> None:
    with SelfCheck("fp8_scale") as sc:
        history = [1.0, 3.5, 2.0]
        got = sc.call(fp8_scale, history, 448.0)
        sc.compare("returns a Python float", "float", type(got).__name__,
                   cause="return float(...), not a tensor or a numpy number.")
        sc.compare("E4M3: fp8_max / max(history) = 448 / 3.5", 128.0, got, cause=_TE_RULE)
        sc.compare("the history is not modified", [1.0, 3.5, 2.0], history,
                   cause="do not sort or pop the list you were given; read it only.")
        sc.compare("margin=1 halves the scale", 64.0, sc.call(fp8_scale, [1.0, 3.5, 2.0], 448.0, 1),
                   cause="divide by 2**margin: the margin leaves headroom for amax to grow.")
        sc.compare("E5M2: 57344 / 0.5", 114688.0, sc.call(fp8_scale, [0.5], 57344.0),
                   cause=_TE_RULE)
        for case, why in (([0.0, 0.0], "amax = 0"), ([], "empty history (amax 0)"),
                          ([1.0, math.inf], "amax = inf"), ([2.0, math.nan], "a NaN in the history")):
            sc.compare(f"{why} gives 1.0", 1.0, sc.call(fp8_scale, list(case), 448.0),
                       cause="when amax is 0, inf or NaN there is nothing sensible to divide by: "
                             "return 1.0. Python's max([2.0, nan]) is 2.0, so look for NaN "
                             "yourself (math.isnan) or use torch.tensor(history).max().")


def _values(t) -> list:
    return [float(v) for v in t.float().reshape(-1)] if isinstance(t, torch.Tensor) else t


def check_quantize_fp8(quantize_fp8) -> None:
    with SelfCheck("quantize_fp8") as sc:
        x = torch.tensor([1.0, -300.0, 0.3952])
        kept = x.clone()
        got = sc.call(quantize_fp8, x, 2.0, "e4m3")
        sc.compare("e4m3 gives torch.float8_e4m3fn", "torch.float8_e4m3fn",
                   str(getattr(got, "dtype", type(got).__name__)),
                   cause="cast with .to(torch.float8_e4m3fn) for fmt 'e4m3'.")
        sc.compare("x * 2 rounded to E4M3, -600 saturated to -448", [2.0, -448.0, 0.8125], _values(got),
                   cause="multiply by scale, clamp to [-448, 448], then cast. Without the clamp, "
                         "older PyTorch turns -600 into NaN.")
        sc.compare("x is not modified", True, bool(torch.equal(x, kept)),
                   cause="use x * scale (a new tensor), not x.mul_(scale).")
        got = sc.call(quantize_fp8, torch.tensor([[1e5, 3.0], [-7e4, 1e-5]]), 1.0, "e5m2")
        sc.compare("e5m2 gives torch.float8_e5m2", "torch.float8_e5m2",
                   str(getattr(got, "dtype", type(got).__name__)),
                   cause="cast with .to(torch.float8_e5m2) for fmt 'e5m2'.")
        sc.compare("the shape is kept", [2, 2], list(getattr(got, "shape", [])),
                   cause="work element-wise; do not flatten x.")
        sc.compare("beyond 57344 saturates instead of becoming inf", [57344.0, 3.0, -57344.0, 1.52587890625e-05],
                   _values(got), cause="clamp to [-57344, 57344] before the cast; a plain cast to "
                                       "float8_e5m2 turns 1e5 into inf.")
        try:
            quantize_fp8(torch.ones(2), 1.0, "e3m4")
            raised = "nothing"
        except NotImplementedError:
            raised = "NotImplementedError"
        except Exception as exc:  # noqa: BLE001 - any other raise becomes a row
            raised = type(exc).__name__
        sc.compare("an unknown fmt ('e3m4') raises ValueError", "ValueError", raised,
                   cause="accept exactly 'e4m3' and 'e5m2'; for anything else "
                         "raise ValueError(f'unknown FP8 format {fmt!r}').")
