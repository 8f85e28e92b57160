"""The trusted half of lesson 06's FP8LinearFunction checks: the reference layer, its
usual mistakes, the probe shipped to the worker, and the comparisons.

The reference quantizes with per-tensor current scaling exactly as Transformer
Engine's reference recipe does (transformer_engine/pytorch/custom_recipes/
reference_current_scaling.py: amax, scale = torch.div(fp8_max, amax) in float32, an infinite
scale replaced by float32's max, scale 1 for amax 0, scale_inv = reciprocal(scale)),
casts with torch's float8 dtypes, dequantizes as q * scale_inv and multiplies in
float32. Casts are compared bit for bit; a matmul within REL of the sum of the
magnitudes of its terms, since the order of its additions may differ.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from grader.checkkit import CheckFailed, draw

FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
FP32_MAX = torch.finfo(torch.float32).max
REL = 1e-5  # the tolerance the exercise states, relative to sum |a_ik * b_kj|

PROBE = '''
def _fp8lin_probe(x, weight, grad_out, grad_fmt):
    """Forward, the tensors saved for backward, then backward; all as plain data."""
    x = x.clone().requires_grad_(True)
    weight = weight.clone().requires_grad_(True)
    out = FP8LinearFunction.apply(x, weight, grad_fmt)
    if not (hasattr(out, "grad_fn") and out.grad_fn is not None):
        return out, None, None, None
    try:
        saved = list(out.grad_fn.saved_tensors)
    except Exception:
        saved = None
    # d/d(out) of sum(out * grad_out) is grad_out exactly; out.backward(grad_out) would import
    # sympy through torch.fx on its first call, about half a second per worker
    (out * grad_out).sum().backward()
    return out.detach(), saved, x.grad, weight.grad
'''


def quantize(t: torch.Tensor, fmt: str, mistake: str | None = None, amax=None):
    """(q, scale_inv) under per-tensor current scaling; `mistake` replays a known slip,
    and `amax` replaces the tensor's own (for one scale shared by two tensors)."""
    dtype = FP8[fmt]
    fp8_max = torch.finfo(dtype).max
    amax = t.abs().max().float() if amax is None else amax
    # torch.div is a correctly rounded division; `fp8_max / amax` is amax.reciprocal() * fp8_max
    scale = fp8_max / amax if mistake == "rdiv_scale" else torch.div(fp8_max, amax)
    if mistake != "no_cap":
        scale = torch.where(torch.isinf(scale), torch.full((), FP32_MAX), scale)
        scale = torch.where(amax == 0, torch.ones(()), scale)
    scaled = t.float() / scale if mistake == "divide_to_quantize" else t.float() * scale
    return scaled.clamp(-fp8_max, fp8_max).to(dtype), torch.reciprocal(scale)


def _shared(x, w):
    """x and weight quantized with one scale, from the larger amax."""
    amax = torch.maximum(x.abs().max(), w.abs().max()).float()
    return quantize(x, "e4m3", amax=amax), quantize(w, "e4m3", amax=amax)


def reference(x, w, g, grad_fmt: str, mistake: str | None = None) -> dict:
    """Output, saved tensors and gradients of the reference layer (or of a mistake), with
    the bounds sum |a_ik * b_kj| of the three matmuls."""
    if mistake == "shared_scale":
        (xq, xs), (wq, ws) = _shared(x, w)
    else:
        (xq, xs), (wq, ws) = quantize(x, "e4m3", mistake), quantize(w, "e4m3", mistake)
    x_hat, w_hat = xq.float() * xs, wq.float() * ws
    if mistake == "no_dequantize":
        x_hat, w_hat = xq.float(), wq.float()
    fmt = {"e4m3_grads": "e4m3", "e5m2_grads": "e5m2"}.get(mistake, grad_fmt)
    gq, gs = quantize(g, fmt, mistake)
    g_hat = g.float() if mistake == "raw_grads" else gq.float() * gs
    if mistake == "hp_operands":
        x_hat, w_hat = x.float(), w.float()
    out = x_hat @ w_hat.T if mistake != "hp_operands" else (xq.float() * xs) @ (wq.float() * ws).T
    return {"out": out, "saved": [xq, wq, xs, ws],
            "gx": g_hat @ w_hat, "gw": g_hat.T @ x_hat,
            "bounds": {"out": x_hat.abs().double() @ w_hat.abs().double().T,
                       "gx": g_hat.abs().double() @ w_hat.abs().double(),
                       "gw": g_hat.abs().double().T @ x_hat.abs().double()}}


def matmul_close(expected: torch.Tensor, bound: torch.Tensor, got) -> bool:
    """float32, the same shape, finite where expected is, within REL * bound elementwise."""
    if not (isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == expected.shape):
        return False
    if not bool(torch.isfinite(got).eq(torch.isfinite(expected)).all()):
        return False
    error = (got.double() - expected.double()).abs()
    return bool((error <= REL * bound + 1e-300).all())


def same_bits(expected: torch.Tensor, got) -> bool:
    return (isinstance(got, torch.Tensor) and got.dtype == expected.dtype and got.shape == expected.shape
            and bool(torch.equal(got.reshape(-1).view(torch.uint8 if got.element_size() == 1 else torch.int32),
                                 expected.reshape(-1).view(torch.uint8 if got.element_size() == 1 else torch.int32))))


def agrees(ref: dict, outcome_value, parts: tuple) -> bool:
    """Does a probe's (out, saved, gx, gw) agree with `ref` on `parts`?"""
    if not (type(outcome_value) is tuple and len(outcome_value) == 4):
        return False
    out, saved, gx, gw = outcome_value
    got = {"out": out, "gx": gx, "gw": gw}
    for part in parts:
        if part == "saved":
            if not (type(saved) is list and len(saved) == 4
                    and all(same_bits(e, s) for e, s in zip(ref["saved"], saved))):
                return False
        elif not matmul_close(ref[part], ref["bounds"][part], got[part]):
            return False
    return True


MISTAKES = {
    "e4m3_grads": "grad_out was quantized to E4M3 although grad_fmt asked for E5M2: pick the dtype "
                  "(and fp8_max) of the gradient from grad_fmt.",
    "e5m2_grads": "grad_out was quantized to E5M2 although grad_fmt asked for E4M3: pick the dtype "
                  "(and fp8_max) of the gradient from grad_fmt.",
    "raw_grads": "the gradients use grad_out as it came: quantize it to grad_fmt with its own current "
                 "scale and dequantize it before the two backward matmuls.",
    "hp_operands": "the backward matmuls use the float32 x and weight: use the dequantized FP8 copies "
                   "saved in the forward pass, as Transformer Engine does.",
    "shared_scale": "x and weight share one scale: each tensor gets its own, fp8_max / its own amax.",
    "no_cap": "an amax of 0 or a tiny amax gives an infinite scale and then NaN: use scale 1.0 when "
              "amax is 0, and float32's largest value when fp8_max / amax overflows.",
    "divide_to_quantize": "you divided by the scale to quantize: multiply t by scale = fp8_max / amax "
                          "(so that amax lands on fp8_max), and dequantize with q * scale_inv.",
    "rdiv_scale": "the scale is one unit in the last place off: with a Python float on the left, "
                  "`fp8_max / amax` is computed as amax.reciprocal() * fp8_max. Use torch.div(fp8_max, "
                  "amax), a correctly rounded division.",
    "no_dequantize": "the matmuls used the FP8 values without their scales: dequantize each operand "
                     "as q.float() * scale_inv first.",
}


def diagnose(case: tuple, outcome_value, parts: tuple, default: str) -> str:
    for mistake, text in MISTAKES.items():
        if mistake == "e5m2_grads" and case[3] == "e5m2" or mistake == "e4m3_grads" and case[3] == "e4m3":
            continue
        if agrees(reference(*case, mistake=mistake), outcome_value, parts):
            return text
    return default


# -- drawing cases, running the probe, explaining a failure --------------------------------

def linear_cases(seed: int, key: str, n: int = 16) -> list[tuple]:
    """(x, weight, grad_out, grad_fmt) with drawn shapes and magnitudes."""
    strategy = st.tuples(st.integers(0, 2**31 - 1), st.integers(1, 6), st.integers(1, 8),
                         st.integers(1, 6), st.integers(-3, 3), st.integers(-3, 3), st.integers(-6, 2),
                         st.sampled_from(["e5m2", "e4m3"]))
    cases = []
    for s, rows, k, m, ex, ew, eg, fmt in draw(strategy, n, seed, key):
        g = torch.Generator().manual_seed(s)
        cases.append((torch.randn(rows, k, generator=g) * 10.0**ex, torch.randn(m, k, generator=g) * 10.0**ew,
                      torch.randn(rows, m, generator=g) * 10.0**eg, fmt))
    return cases


def _shown(t, digits: int = 4):
    if not isinstance(t, torch.Tensor):
        return t
    values = [float(f"{v:.{digits}g}") for v in t.float().reshape(-1).tolist()]
    return values if t.dim() else values[0]


def _view(value, parts: tuple) -> dict:
    """What the learner's probe (or the reference, as a tuple) shows for `parts`."""
    if not (type(value) is tuple and len(value) == 4):
        return {"result": value}
    out, saved, gx, gw = value
    view = {}
    for part in parts:
        if part == "saved":
            if type(saved) is not list:
                view["saved"] = saved
                continue
            view["saved dtypes"] = [str(getattr(t, "dtype", type(t).__name__)) for t in saved]
            if len(saved) == 4:
                view["x_scale_inv, w_scale_inv"] = [_shown(saved[2], 8), _shown(saved[3], 8)]
                view["x_q"] = _shown(saved[0])
        else:
            view[part] = _shown({"out": out, "gx": gx, "gw": gw}[part])
    return view


def _expected_value(ref: dict) -> tuple:
    return ref["out"], ref["saved"], ref["gx"], ref["gw"]


def _case_text(case: tuple) -> str:
    x, w, g, fmt = case
    return (f"FP8LinearFunction.apply(x, weight, {fmt!r}) with x {list(x.shape)} = {_shown(x, 3)}, "
            f"weight {list(w.shape)} = {_shown(w, 3)}, then backward(grad_out = {_shown(g, 3)})")


NAMES = {"out": "the output", "saved": "the tensors saved for backward", "gx": "the gradient of x",
         "gw": "the gradient of weight"}


def check_linear(learner, cases: list, parts_of, checked: str, cause: str) -> None:
    """Run the probe on every case in one round trip; compare `parts_of(i)` of case i."""
    learner.run(PROBE)
    outcomes = learner.map("_fp8lin_probe", cases)
    for i, (case, out) in enumerate(zip(cases, outcomes)):
        if not out.ok:
            raise out.raised
        parts = parts_of(i)
        ref = reference(*case)
        if agrees(ref, out.value, parts):
            continue
        failing = next(p for p in parts if not agrees(ref, out.value, (p,)))
        raise CheckFailed(f"{checked}: {NAMES[failing]}", _case_text(case),
                          _view(_expected_value(ref), (failing,)), _view(out.value, (failing,)),
                          cause=diagnose(case, out.value, (failing,), _saved_cause(out.value)
                                         if failing == "saved" else cause))


def _saved_cause(value) -> str:
    saved = value[1] if type(value) is tuple and len(value) == 4 else None
    if not saved:
        return ("save the FP8 tensors with ctx.save_for_backward(x_q, w_q, x_scale_inv, w_scale_inv), "
                "exactly these four in this order, not as attributes of ctx.")
    if any(getattr(t, "dtype", None) == torch.float32 and t.dim() for t in saved[:2]):
        return ("you saved float32 tensors for the backward pass: save the FP8 copies x_q and w_q "
                "(a quarter of the bytes) and their scale inverses.")
    return ("x_q and w_q are clamp(t * scale, -448, 448) cast to torch.float8_e4m3fn with "
            "scale = torch.div(448.0, amax) in float32 (1.0 for amax 0, float32's max if it "
            "overflows); scale_inv = torch.reciprocal(scale), a 0-dim float32 tensor.")
