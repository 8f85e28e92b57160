"""Claims of lesson 06_bf16_and_fp8 (BF16 needs no scaler where FP16 loses gradients; FP8
casts, scales and an FP8 linear layer), with tolerances, and margins for the printed
roundings (tests/lesson_code.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from lesson_code import lesson_namespace, order_is_stable, prints_stably

FP32_MAX = torch.finfo(torch.float32).max


@pytest.mark.slow
def test_bf16_needs_no_scaler_where_fp16_loses_most_gradients():
    ns = lesson_namespace("06_bf16_and_fp8", "runs = {")
    runs = ns["runs"]
    for name, (losses, zeros) in runs.items():
        assert order_is_stable(losses[0]) and order_is_stable(losses[-1])
    fp32 = runs["FP32"][0][-1]
    assert runs["FP16, no scaler"][1][-1] > 0.6 and runs["FP16, no scaler"][0][-1] > 2.5 * fp32
    assert runs["BF16, no scaler"][1][-1] == 0 and runs["FP32"][1][-1] == 0
    assert 0 < runs["FP16 + GradScaler"][1][-1] < 0.03
    for name in ("BF16, no scaler", "FP16 + GradScaler"):
        assert abs(runs[name][0][-1] - fp32) < 0.1 * fp32


@pytest.mark.slow
def test_the_output_gradient_starts_near_1e_6_and_reaches_1e_7_only_after_about_50_steps():
    ns = lesson_namespace("06_bf16_and_fp8", "runs = {")
    model = ns["make_model"]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    medians = []
    for i in range(201):
        x, y = ns["BATCHES"][i % len(ns["BATCHES"])]
        opt.zero_grad(set_to_none=True)
        out = model(x)
        out.retain_grad()
        F.mse_loss(out, y).backward()
        medians.append(float(out.grad.abs().median()))
        opt.step()
    assert 3e-7 < medians[0] < 3e-6
    first_below = next(i for i, m in enumerate(medians) if m < 1e-7)
    assert 40 <= first_below <= 70, first_below
    assert 5e-9 < medians[200] < 3e-8


def test_e4m3_keeps_about_1_2_and_e5m2_about_0_9_decimal_digits():
    for dtype, digits in ((torch.float8_e4m3fn, 1.2), (torch.float8_e5m2, 0.9)):
        bits = 1 - math.log2(torch.finfo(dtype).eps)  # stored mantissa bits + the implicit one
        assert round(bits * math.log10(2), 1) == digits


def test_torch_2_13_saturates_every_e4m3_overflow_and_e5m2_overflows_from_61440():
    e4m3 = torch.tensor([449.0, 464.0, 465.0, 1000.0, math.inf, -465.0, -math.inf])
    assert e4m3.to(torch.float8_e4m3fn).float().tolist() == [448.0] * 5 + [-448.0] * 2
    assert math.isnan(torch.tensor([math.nan]).to(torch.float8_e4m3fn).float().item())
    e5m2 = torch.tensor([57344.0, 61439.0, 61440.0, 1e6]).to(torch.float8_e5m2).float().tolist()
    assert e5m2 == [57344.0, 57344.0, math.inf, math.inf]


def _te_delayed_scale(amax: float, fp8_max: float, margin: int) -> float:
    """transformer_engine/pytorch/quantization.py, _default_sf_compute, with a previous scale of 1."""
    amax_t, previous = torch.tensor([amax], dtype=torch.float32), torch.ones(1)
    sf = (fp8_max / amax_t) / (2**margin)
    sf = torch.where(amax_t > 0.0, sf, previous)
    sf = torch.where(torch.isfinite(amax_t), sf, previous)
    return torch.where(torch.isinf(sf), torch.full_like(sf, FP32_MAX), sf).item()


@pytest.mark.slow
@pytest.mark.parametrize("amax", [3.5, 1e-20, 1e-35, 1e-36, 2.0**-126, 1e-39, 0.0, math.inf])
def test_fp8_scale_follows_tes_float32_rule_and_its_cap(amax):
    fp8_scale = lesson_namespace("06_bf16_and_fp8", "def fp8_scale(")["fp8_scale"]
    for fp8_max in (448.0, 57344.0):
        for margin in (0, 1, 3):
            ours, te = fp8_scale([amax], fp8_max, margin), _te_delayed_scale(amax, fp8_max, margin)
            assert ours == te or math.isclose(ours, te, rel_tol=1e-6), (amax, fp8_max, margin, ours, te)


def test_a_python_float_over_a_tensor_multiplies_by_the_reciprocal_and_torch_div_does_not():
    amax = torch.rand(10000, generator=torch.Generator().manual_seed(0)) * 10 + 1e-3
    exact = (448.0 / amax.double()).float()
    assert torch.equal(448.0 / amax, amax.reciprocal() * 448.0)
    assert torch.equal(torch.div(448.0, amax), exact)
    assert 0.1 < float((448.0 / amax != exact).float().mean()) < 0.5
    assert (448.0 / torch.tensor(3.0)).item() != torch.div(448.0, torch.tensor(3.0)).item()


@pytest.mark.slow
def test_the_amax_scale_beats_every_power_of_two_of_the_sweep_for_e4m3():
    ns = lesson_namespace("06_bf16_and_fp8", "def exercises_ready")
    errors, best, t = ns["errors"], ns["best"], ns["t"]
    at_best = ns["rel_rms"](ns["dequantize"](ns["quantize_fp8"](t, best["e4m3"], "e4m3"), best["e4m3"]), t)
    assert at_best < min(errors["e4m3"])
    for value in (at_best, min(errors["e4m3"]), min(errors["e5m2"])):
        assert prints_stably(value, ".3f", rel=1e-4)


@pytest.mark.slow
def test_with_a_current_scale_e4m3_gradients_beat_e5m2_even_when_e4m3_flushes_a_third():
    ns = lesson_namespace("06_bf16_and_fp8", "def fp8_layer_grads")
    x, w, rel = ns["x_in"], ns["w_in"], ns["rel_rms"]
    for label, grad_out in ns["grad_outs"].items():
        exact = (grad_out @ w, grad_out.T @ x)
        errors = {}
        for fmt in ("e4m3", "e5m2"):
            got = ns["fp8_layer_grads"](x, w, grad_out, fmt)
            errors[fmt] = [rel(g, e) for g, e in zip(got, exact)]
            for value in errors[fmt]:
                assert prints_stably(value, ".1%", rel=1e-4)
        assert all(a < 0.75 * b for a, b in zip(errors["e4m3"], errors["e5m2"])), (label, errors)
    spread = ns["grad_outs"]["spread over 2^-30..1"]
    flushed = float((ns["quantize_current"](spread, torch.float8_e4m3fn)[0].float() == 0).float().mean())
    assert 0.3 < flushed < 0.45


def test_ml_dtypes_rounds_e4m3_overflow_to_448_up_to_464_and_to_nan_beyond():
    """The behaviour of the cast before PyTorch PR #178817, as ml_dtypes still has it
    (runs where ml_dtypes is installed, e.g. next to JAX)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    import numpy as np

    values = np.array([449.0, 464.0, 464.5, 1000.0, np.inf], dtype=np.float32)
    cast = values.astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    assert cast[:2].tolist() == [448.0, 448.0] and np.isnan(cast[2:]).all()
