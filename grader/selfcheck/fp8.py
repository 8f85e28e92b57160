"""Self-checks for lesson 06 (BF16 and FP8): `fp8_scale`, `quantize_fp8` and
`FP8LinearFunction`.

The cases are small and written out by hand, so that each row of the table can
be checked with pencil and paper: 448 / 3.5 = 128, 3 * 112 = 336 rounds to 320 in
E4M3, and so on.
"""

from __future__ import annotations

import math

import torch

from grader.selfcheck.core import SelfCheck

_TE_RULE = ("amax = the largest entry of the whole history (not the last one); if it is finite and > 0 "
            "return (fp8_max / amax) / 2**margin, otherwise 1.0.")
FP32_MAX = torch.finfo(torch.float32).max


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
        sc.compare("amax = 1e-310: fp8_max / amax is inf, so float32's max", FP32_MAX,
                   sc.call(fp8_scale, [1e-310], 448.0),
                   cause="when fp8_max / amax is larger than torch.finfo(torch.float32).max, return "
                         "that largest float32, as TE replaces an infinite float32 scale.")


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


# -- FP8LinearFunction --------------------------------------------------------------------

def _run_layer(fn, x, w, grad_out, grad_fmt):
    x, w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = fn.apply(x, w, grad_fmt)
    saved = list(out.grad_fn.saved_tensors) if getattr(out, "grad_fn", None) is not None else []
    (out * grad_out).sum().backward()   # the gradient reaching out is grad_out exactly
    return out, saved, x.grad, w.grad


def _max_rel_error(expected: list, got) -> float:
    if not isinstance(got, torch.Tensor) or got.numel() != len(expected):
        return math.inf
    values = got.detach().float().reshape(-1).tolist()
    return max(abs(g - e) / max(abs(e), 1e-30) for e, g in zip(expected, values))


def check_fp8_linear(FP8LinearFunction) -> None:
    with SelfCheck("FP8LinearFunction") as sc:
        # x has amax 4: scale 448 / 4 = 112, and 3 * 112 = 336 is a tie between 320 and 352 (to even: 320)
        x = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
        grad_out = torch.tensor([[1.0, 3.0], [-0.1, 7.0]])
        out, saved, gx, _ = sc.call(_run_layer, FP8LinearFunction, x, torch.eye(2), grad_out, "e5m2")
        sc.compare("the output is float32 of shape (N, out)", ["torch.float32", [2, 2]],
                   [str(out.dtype), list(out.shape)], cause="return x_hat @ w_hat.T in float32.")
        sc.within("identity weight: the output is x in E4M3 (3.0 comes back as 320/112)",
                  _max_rel_error([1.0, 2.0, 320 / 112, -4.0], out), 1e-6,
                  cause="quantize x with scale = 448 / amax(x), cast to torch.float8_e4m3fn, "
                        "dequantize with q.float() * scale_inv, then multiply.")
        sc.compare("saves x_q, w_q (FP8) and their scale inverses (float32)",
                   ["torch.float8_e4m3fn", "torch.float8_e4m3fn", "torch.float32", "torch.float32"],
                   [str(getattr(t, "dtype", type(t).__name__)) for t in saved],
                   cause="ctx.save_for_backward(x_q, w_q, x_scale_inv, w_scale_inv): the FP8 copies, "
                         "not the float32 inputs, and exactly these four.")
        if len(saved) == 4:
            sc.compare("x_q = x * 112 in E4M3", [112.0, 224.0, 320.0, -448.0],
                       [float(v) for v in saved[0].float().reshape(-1)],
                       cause="q = clamp(x * scale, -448, 448).to(torch.float8_e4m3fn).")
            sc.within("x_scale_inv = 1 / 112", _max_rel_error([1 / 112], saved[2]), 1e-6,
                      cause="scale_inv = torch.reciprocal(scale), a 0-dim float32 tensor.")
        # amax 3: 448 / 3 is not exact, and 448.0 / amax (amax.reciprocal() * 448) rounds differently
        _, saved3, _, _ = sc.call(_run_layer, FP8LinearFunction, torch.tensor([[1.0, -3.0]]), torch.eye(2),
                                  torch.ones(1, 2), "e4m3")
        if len(saved3) == 4:
            exact = torch.reciprocal(torch.div(448.0, torch.tensor(3.0))).item()
            got = saved3[2].item() if isinstance(saved3[2], torch.Tensor) and saved3[2].numel() == 1 else saved3[2]
            sc.compare("amax 3: x_scale_inv = 1 / torch.div(448, 3), to the last bit", exact, got,
                       cause="compute the scale with torch.div(fp8_max, amax): `fp8_max / amax` with a Python "
                             "float on the left multiplies by amax.reciprocal() and rounds twice.")
        # grad_out has amax 7: E5M2 scale 57344 / 7 = 8192, and -0.1 * 8192 = -819.2 rounds to -768
        sc.within("e5m2: grad_x = dequantized grad_out (-0.1 comes back as -768/8192)",
                  _max_rel_error([1.0, 3.0, -0.09375, 7.0], gx), 1e-6,
                  cause="quantize grad_out to torch.float8_e5m2 with scale = 57344 / amax(grad_out), "
                        "dequantize, then grad_x = g_hat @ w_hat.")
        # E4M3: scale 448 / 7 = 64, and -0.1 * 64 = -6.4 rounds to -6.5
        _, _, gx, _ = sc.call(_run_layer, FP8LinearFunction, x, torch.eye(2), grad_out, "e4m3")
        sc.within("e4m3: grad_x = dequantized grad_out (-0.1 comes back as -6.5/64)",
                  _max_rel_error([1.0, 3.0, -0.1015625, 7.0], gx), 1e-6,
                  cause="grad_fmt 'e4m3' quantizes grad_out to torch.float8_e4m3fn with fp8_max 448.")
        w = torch.tensor([[0.5, -0.25], [3.0, 1.0]])
        _, _, _, gw = sc.call(_run_layer, FP8LinearFunction, torch.eye(2), w, grad_out, "e5m2")
        sc.within("identity x: grad_w = dequantized grad_out, transposed",
                  _max_rel_error([1.0, -0.09375, 3.0, 7.0], gw), 1e-6,
                  cause="grad_w = g_hat.T @ x_hat, shape (out, in).")
        out, saved, gx, gw = sc.call(_run_layer, FP8LinearFunction, x * 1e-40, w, torch.zeros(2, 2), "e4m3")
        finite = all(bool(torch.isfinite(t).all()) for t in (out, gx, gw))
        sc.row("a tiny x (1e-40) and a zero grad_out give no inf or NaN", True, finite, finite,
               cause="a scale of inf turns 0 into NaN: use 1.0 when amax is 0 and float32's max "
                     "when fp8_max / amax overflows.")
        if len(saved) == 4:
            sc.within("... and x_scale_inv = 1 / float32's max", _max_rel_error([1 / FP32_MAX], saved[2]),
                      1e-6, cause="scale = torch.finfo(torch.float32).max when fp8_max / amax is inf.")
