"""Hidden checks for lesson 06: `fp8_scale` (4 pts), `quantize_fp8` (5 pts) and
`FP8LinearFunction` (9 pts).

Expected values for the first two come from references in this file; those of
FP8LinearFunction from grader/checks/reference_06.py. `quantize_fp8` is compared
bit for bit with "scale, clamp to +-fp8_max, cast" on float32 inputs and
power-of-two scales, so the float32 product is exact whatever order the learner
multiplies in, and the comparison never depends on how a PyTorch version casts
an out-of-range value to FP8 (NaN before PR #178817, saturation in 2.13): every
value is clamped before the cast in the reference, and the contract demands it.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from grader.checkkit import CheckFailed, call_text, draw, exercise, fail_case
from grader.checks.reference_06 import check_linear, linear_cases

FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
FP8_MAX = {"e4m3": 448.0, "e5m2": 57344.0}

SCALE_HELPER = '''
def _fp8_scale_probe(history, fp8_max, margin):
    kept = list(history)
    result = fp8_scale(history, fp8_max, margin)
    return result, history == kept
'''

QUANT_HELPER = '''
def _fp8_quant_probe(x, scale, fmt):
    kept = x.clone()
    out = quantize_fp8(x, scale, fmt)
    return out, bool((x == kept).all()) if x.numel() else True
'''

# -- fp8_scale --------------------------------------------------------------------


FP32_MAX = torch.finfo(torch.float32).max


def ref_fp8_scale(history: list, fp8_max: float, margin: int = 0) -> float:
    if any(math.isnan(a) for a in history):
        return 1.0
    amax = max(history, default=0.0)
    if not (math.isfinite(amax) and amax > 0.0):
        return 1.0
    if fp8_max / amax > FP32_MAX:  # TE computes in float32, where this is inf, then caps it
        return FP32_MAX
    return (fp8_max / amax) / 2**margin


_RULE = ("amax is the largest entry of the history; if it is finite and > 0 return "
         "(fp8_max / amax) / 2**margin, otherwise return 1.0.")


def _amax_values():
    return st.floats(min_value=1e-30, max_value=1e30, allow_nan=False, allow_infinity=False)


def _scale_cases(margins, seed: int, key: str, n: int = 60):
    strategy = st.tuples(st.lists(_amax_values(), min_size=1, max_size=16),
                         st.sampled_from([448.0, 57344.0]), margins)
    return draw(strategy, n=n, seed=seed, key=key)


def _scale_cause(args: tuple, value: float, default: str) -> str:
    """Name the likely mistake when a wrong scale matches a common wrong rule."""
    history, fp8_max, margin = args
    finite = [a for a in history if math.isfinite(a)]
    guesses = []
    if history:
        guesses.append((ref_fp8_scale([history[-1]], fp8_max, margin),
                        "you used the last entry of the history; take the maximum over all of it."))
    if finite and all(a > 0 for a in finite):
        guesses.append((ref_fp8_scale([sum(finite) / len(finite)], fp8_max, margin),
                        "you used the mean of the history; take its maximum."))
    if finite and all(a > 0 for a in finite) and fp8_max / max(finite) > FP32_MAX:
        guesses.append((fp8_max / max(finite), "fp8_max / amax is larger than any float32 here: return "
                                              "torch.finfo(torch.float32).max instead, as TE does."))
        guesses.append(((fp8_max / max(finite)) / 2**margin,
                        "fp8_max / amax is larger than any float32 here: return float32's max, "
                        "whatever the margin (TE's float32 quotient is already inf)."))
        guesses.append((FP32_MAX / 2**margin, "the cap is float32's max itself; the margin does not "
                                              "apply to a capped scale."))
    if margin:
        guesses.append((ref_fp8_scale(history, fp8_max, 0),
                        "the margin was ignored: divide the scale by 2**margin."))
        guesses.append((ref_fp8_scale(history, fp8_max, 0) * 2**margin,
                        "the margin goes the other way: divide by 2**margin, do not multiply."))
    for guess, text in guesses:
        if isinstance(value, float) and math.isclose(value, guess, rel_tol=1e-12):
            return text
    return default


def _check_scales(learner, cases, what: str, cause: str):
    learner.run(SCALE_HELPER)
    outcomes = learner.map("_fp8_scale_probe", cases)
    for args, out in zip(cases, outcomes):
        expected = ref_fp8_scale(*args)
        if not out.ok:
            raise out.raised
        value, kept = out.value
        if type(value) is not float:
            raise CheckFailed("fp8_scale returns a Python float", call_text("fp8_scale", args),
                              expected, value, cause="return float(...), not a tensor or numpy value.")
        if not (value == expected or (math.isfinite(value) and math.isclose(value, expected, rel_tol=1e-12))):
            raise CheckFailed(what, call_text("fp8_scale", args), expected, value,
                              cause=_scale_cause(args, value, cause))
        if not kept:
            raise CheckFailed("fp8_scale leaves amax_history unchanged", call_text("fp8_scale", args),
                              "the same list", "a modified list",
                              cause="read the history only: no sort(), pop() or append() on it.",
                              show_values=False)


@exercise("fp8_scale", points=1)
def test_scale_maps_the_history_max_onto_fp8_max(learner, seed):
    """fp8_scale returns fp8_max / max(history) for finite positive histories."""
    cases = _scale_cases(st.just(0), seed, "06.scale", n=50)
    cases = [([3.5], 448.0, 0), ([1.0, 3.5, 2.0], 448.0, 0), ([2.0**-20], 57344.0, 0)] + cases
    _check_scales(learner, cases, "the scale maps the largest amax in the history onto fp8_max",
                  cause="take the maximum over the whole history (not the last entry, not the mean) "
                        "and return fp8_max / amax.")


@exercise("fp8_scale", points=1)
def test_margin_divides_the_scale_by_two_to_the_margin(learner, seed):
    """A margin m divides the scale by 2**m."""
    cases = _scale_cases(st.integers(1, 4), seed, "06.margin", n=40)
    cases = [([1.0, 3.5, 2.0], 448.0, 1), ([0.5], 57344.0, 3)] + cases
    _check_scales(learner, cases, "margin m gives (fp8_max / amax) / 2**m",
                  cause="divide by 2**margin (a margin of 1 halves the scale).")


@exercise("fp8_scale", points=1)
def test_zero_inf_or_nan_amax_gives_scale_one(learner, seed):
    """An amax of 0, inf or NaN (or an empty history) gives the scale 1.0."""
    nan, inf = math.nan, math.inf
    histories = [[0.0], [0.0, 0.0, 0.0], [], [inf], [1.0, inf, 2.0], [nan], [2.0, nan, 1.0],
                 [nan, 2.0], [0.0, nan], [inf, nan]]
    cases = [(h, fmax, m) for h in histories for fmax, m in ((448.0, 0), (57344.0, 2))]
    _check_scales(learner, cases, "an amax of 0, inf or NaN gives the scale 1.0",
                  cause="check for NaN in every entry (Python's max() skips a NaN that is not first, "
                        "so max([2.0, nan]) is 2.0), then return 1.0 unless amax is finite and > 0; "
                        "an empty history has amax 0.")


@exercise("fp8_scale", points=1)
def test_a_scale_beyond_float32_is_capped_at_float32_max(learner, seed):
    """When fp8_max / amax exceeds float32's range, the scale is float32's largest value."""
    tiny = draw(st.floats(min_value=1e-320, max_value=1e-36), n=20, seed=seed, key="06.tiny")
    cases = [([1e-310], 448.0, 0), ([1e-310, 0.0], 57344.0, 2), ([1e-36], 448.0, 1),
             ([2.0**-126], 448.0, 0), ([1e-35], 448.0, 0), ([1e-35], 57344.0, 0)]
    cases += [([a], fmax, m) for a, fmax, m in zip(tiny, [448.0, 57344.0] * 10, [0, 1, 3, 0] * 5)]
    _check_scales(learner, cases, "a scale beyond float32's range is float32's max",
                  cause="if fp8_max / amax is larger than torch.finfo(torch.float32).max (inf for "
                        "amax = 1e-310), return that largest float32, before any margin: TE computes "
                        "the scale in float32, where the quotient overflows, and caps an infinite "
                        "scale there.")


# -- quantize_fp8 --------------------------------------------------------------------


def ref_quantize(x: torch.Tensor, scale: float, fmt: str) -> torch.Tensor:
    m = FP8_MAX[fmt]
    return (x.float() * scale).clamp(-m, m).to(FP8[fmt])


def _tensor_cases(seed: int, key: str, fmts, n: int = 80, limit: float = 1e5):
    strategy = st.tuples(
        st.lists(st.floats(min_value=-limit, max_value=limit, allow_nan=False,
                           allow_infinity=False, width=32), min_size=1, max_size=24),
        st.integers(-8, 8).map(lambda k: 2.0**k),
        st.sampled_from(fmts))
    return [(torch.tensor(v, dtype=torch.float32), s, f) for v, s, f in draw(strategy, n, seed, key)]


def _same_bits(expected: torch.Tensor, got) -> bool:
    return (isinstance(got, torch.Tensor) and got.dtype == expected.dtype
            and got.shape == expected.shape
            and bool(torch.equal(got.view(torch.uint8), expected.view(torch.uint8))))


def _compare_quantized(learner, cases, what: str, cause: str):
    outcomes = learner.map("quantize_fp8", cases)
    for args, out in zip(cases, outcomes):
        expected = ref_quantize(*args)
        if not out.ok or not _same_bits(expected, out.value):
            got = out.value
            if out.ok and isinstance(got, torch.Tensor) and got.dtype != expected.dtype:
                cause = f"fmt {args[2]!r} must give {expected.dtype}; got {got.dtype}."
            elif (out.ok and isinstance(got, torch.Tensor) and got.shape == expected.shape
                  and not bool(torch.isfinite(got.float()).all())):
                cause = ("a value beyond fp8_max became inf or NaN: clamp x * scale to "
                         "[-fp8_max, fp8_max] before the cast.")
            fail_case(what, "quantize_fp8", args, expected, out, cause)


@exercise("quantize_fp8", points=1)
def test_returns_the_fp8_dtype_and_shape(learner, seed):
    """quantize_fp8 returns the FP8 dtype of fmt, keeps x's shape and leaves x unchanged."""
    learner.run(QUANT_HELPER)
    cases = [(torch.tensor([1.0, -2.0, 0.5]), 1.0, "e4m3"), (torch.tensor([1.0, -2.0, 0.5]), 1.0, "e5m2"),
             (torch.arange(6, dtype=torch.float32).reshape(2, 3), 4.0, "e4m3"),
             (torch.full((2, 1, 2), 3.0), 0.5, "e5m2"), (torch.zeros(0), 8.0, "e4m3")]
    outcomes = learner.map("_fp8_quant_probe", cases)
    for args, out in zip(cases, outcomes):
        if not out.ok:
            raise out.raised
        value, kept = out.value
        expected = FP8[args[2]]
        if not isinstance(value, torch.Tensor) or value.dtype != expected:
            raise CheckFailed(f"fmt {args[2]!r} returns a {expected} tensor",
                              call_text("quantize_fp8", args), str(expected),
                              str(getattr(value, "dtype", type(value).__name__)),
                              cause="'e4m3' is torch.float8_e4m3fn and 'e5m2' is torch.float8_e5m2; "
                                    "finish with .to(that dtype).")
        if tuple(value.shape) != tuple(args[0].shape):
            raise CheckFailed("the result has x's shape", call_text("quantize_fp8", args),
                              list(args[0].shape), list(value.shape),
                              cause="work element-wise: no flatten(), no reduction.")
        if not kept:
            raise CheckFailed("x is not modified", call_text("quantize_fp8", args), "x unchanged",
                              "x was changed in place", show_values=False,
                              cause="use x * scale (a new tensor), not x.mul_(scale) or x *= scale.")


@exercise("quantize_fp8", points=1)
def test_matches_scale_clamp_cast_in_e4m3(learner, seed):
    """E4M3 results equal clamp(x * scale, -448, 448) cast to float8_e4m3fn, bit for bit."""
    cases = _tensor_cases(seed, "06.e4m3", ["e4m3"], n=60, limit=4096.0)
    cases = [(torch.tensor([1.0, -300.0, 0.3952]), 2.0, "e4m3"),
             (torch.tensor([0.001, -0.0009765625, 2.0**-10]), 1.0, "e4m3")] + cases
    _compare_quantized(learner, cases, "E4M3 values equal clamp(x * scale, -448, 448) in FP8",
                       cause="multiply by scale in float32, clamp to [-448, 448], then "
                             ".to(torch.float8_e4m3fn); do not round or divide yourself.")


@exercise("quantize_fp8", points=1)
def test_matches_scale_clamp_cast_in_e5m2(learner, seed):
    """E5M2 results equal clamp(x * scale, -57344, 57344) cast to float8_e5m2, bit for bit."""
    cases = _tensor_cases(seed, "06.e5m2", ["e5m2"], n=60)
    cases = [(torch.tensor([500.0, -3.0, 1e-5]), 1.0, "e5m2")] + cases
    _compare_quantized(learner, cases, "E5M2 values equal clamp(x * scale, -57344, 57344) in FP8",
                       cause="multiply by scale in float32, clamp to [-57344, 57344], then "
                             ".to(torch.float8_e5m2).")


@exercise("quantize_fp8", points=1)
def test_saturates_values_beyond_fp8_max(learner, seed):
    """Scaled values beyond +-fp8_max become +-fp8_max, never inf or NaN."""
    cases = [(torch.tensor([60000.0, -1e6, 57344.0, 61440.0]), 1.0, "e5m2"),
             (torch.tensor([1e5, -1e5]), 4.0, "e5m2"),
             (torch.tensor([449.0, 470.0, -1e4, 1e6]), 1.0, "e4m3"),
             (torch.tensor([3e38, -3e38, 1.0]), 4.0, "e4m3"),
             (torch.tensor([3e38, 2.0]), 4.0, "e5m2")]
    _compare_quantized(learner, cases, "values beyond fp8_max saturate to +-fp8_max",
                       cause="clamp x * scale to [-fp8_max, fp8_max] before the cast: a plain cast "
                             "gives inf in E5M2 (and NaN in E4M3 on PyTorch before 2026); "
                             "torch.finfo(dtype).max gives fp8_max.")


@exercise("quantize_fp8", points=1)
def test_unknown_format_raises_value_error(learner, seed):
    """Any fmt other than 'e4m3' or 'e5m2' raises ValueError."""
    cases = [(torch.ones(2), 1.0, fmt) for fmt in ("e3m4", "int8", "")]
    outcomes = learner.map("quantize_fp8", cases)
    for args, out in zip(cases, outcomes):
        if out.ok or out.raised.type_name != "ValueError":
            if out.raised is not None and out.raised.not_implemented:
                raise out.raised
            got = f"{out.raised.type_name} raised" if out.raised else out.value
            raise CheckFailed("an unknown fmt raises ValueError", call_text("quantize_fp8", args),
                              "ValueError raised", got,
                              cause="accept exactly 'e4m3' and 'e5m2'; for anything else "
                                    "raise ValueError(f'unknown FP8 format {fmt!r}').")


# -- FP8LinearFunction ------------------------------------------------------------------

LINEAR = "FP8LinearFunction"


@exercise(LINEAR, points=2)
def test_forward_is_the_matmul_of_the_dequantized_e4m3_inputs(learner, seed):
    """The output is x_hat @ w_hat.T in float32, x and weight quantized to E4M3 with their own scales."""
    cases = [(torch.tensor([[1.0, 2.0], [3.0, -4.0]]), torch.tensor([[0.5, -0.25], [3.0, 1.0]]),
              torch.ones(2, 2), "e5m2")] + linear_cases(seed, "06.lin.forward")
    check_linear(learner, cases, lambda i: ("out",), "the forward pass matches the reference",
                  cause="quantize x and weight to E4M3, each with scale = torch.div(448.0, its own amax), dequantize "
                        "(q.float() * scale_inv) and return x_hat @ w_hat.T in float32.")


@exercise(LINEAR, points=2)
def test_saves_the_fp8_inputs_and_their_scale_inverses_bit_for_bit(learner, seed):
    """ctx saves (x_q, w_q, x_scale_inv, w_scale_inv), bit for bit equal to the reference's."""
    cases = linear_cases(seed, "06.lin.saved", n=12)
    check_linear(learner, cases, lambda i: ("saved",), "the forward pass saves the FP8 copies",
                  cause="")


@exercise(LINEAR, points=2)
def test_backward_quantizes_grad_out_to_grad_fmt_with_its_own_scale(learner, seed):
    """With an identity weight (or input), each gradient is the dequantized FP8 grad_out itself."""
    cases, gen = [], torch.Generator().manual_seed(seed)
    for x, w, g, fmt in linear_cases(seed, "06.lin.grad", n=10):
        k, size = x.shape[1], g.abs().max()
        cases.append((x, torch.eye(k), torch.randn(x.shape[0], k, generator=gen) * size, fmt))
        cases.append((torch.eye(k), w, torch.randn(k, w.shape[0], generator=gen) * size, fmt))
    check_linear(learner, cases, lambda i: ("gx",) if i % 2 == 0 else ("gw",),
                  "grad_out is quantized to grad_fmt with its own current scale",
                  cause="quantize grad_out to grad_fmt ('e5m2': torch.float8_e5m2, fp8_max 57344; "
                        "'e4m3': 448) with scale = fp8_max / amax(grad_out), dequantize it, then "
                        "grad_x = g_hat @ w_hat and grad_w = g_hat.T @ x_hat.")


@exercise(LINEAR, points=2)
def test_gradients_are_computed_from_the_quantized_tensors(learner, seed):
    """grad_x = g_hat @ w_hat and grad_w = g_hat.T @ x_hat, from the saved FP8 tensors."""
    cases = linear_cases(seed, "06.lin.backward")
    check_linear(learner, cases, lambda i: ("gx", "gw"), "the backward pass matches the reference",
                  cause="grad_x = g_hat @ w_hat and grad_w = g_hat.T @ x_hat, all dequantized FP8 "
                        "tensors, in float32; return None as the gradient of grad_fmt.")


@exercise(LINEAR, points=1)
def test_zero_and_tiny_tensors_get_finite_scales(learner, seed):
    """amax 0 gives scale 1.0 and a tiny amax float32's max: nothing becomes inf or NaN."""
    g = torch.Generator().manual_seed(seed)
    x, w, grad = torch.randn(3, 4, generator=g), torch.randn(2, 4, generator=g), torch.randn(3, 2, generator=g)
    cases = [(torch.zeros(3, 4), w, grad, "e4m3"), (x, torch.zeros(2, 4), grad, "e5m2"),
             (x, w, torch.zeros(3, 2), "e5m2"), (x * 1e-40, w, grad, "e4m3"),
             (x, w * 1e-41, grad, "e5m2"), (x, w, grad * 1e-44, "e4m3")]
    check_linear(learner, cases, lambda i: ("out", "gx", "gw"),
                  "an all-zero or tiny tensor quantizes without inf or NaN",
                  cause="scale = fp8_max / amax is inf when amax is 0 or tiny: use 1.0 when amax is 0 and "
                        "torch.finfo(torch.float32).max when the quotient overflows.")
