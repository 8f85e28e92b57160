"""Each lesson's claims hold with room to spare, on whatever CPU runs the suite.

A lesson prints what every CPU agrees on: verdicts, orders of magnitude and
rounded shares, which nbval then compares exactly. These tests recompute the
numbers behind those prints with the lesson's own code (tests/lesson_code.py)
and check the precise claims the prose makes, with tolerances, plus a margin:
each printed rounding must survive the small shifts that another CPU's
summation order causes. The whole suite also runs under other CPUs' kernel
choices (see README, "Development"), so these hold there too.
"""

from __future__ import annotations

import math

import pytest
import torch

from lesson_code import lesson_namespace, prints_stably

pytestmark = pytest.mark.slow


def order_is_stable(x: float, margin: float = 1.05) -> bool:
    """`order(x)` prints the decade of x; it is stable when x is not within `margin` of a power of ten."""
    frac = math.log10(x) - math.floor(math.log10(x))
    return math.log10(margin) < frac < 1 - math.log10(margin)


def share_is_stable(share: float, n: int, counts: float = 3, spec: str | None = None) -> bool:
    """A share of n items prints the same if `counts` items more or fewer had crossed its
    threshold on another CPU. With no `spec`, lesson 03's `pct` rule: one decimal below 1%."""
    near = {min(max(share + d, 0.0), 1.0) for d in (-counts / n, 0.0, counts / n)}  # stays in [0, 1]
    return len({format(x, spec or (".1%" if x < 0.01 else ".0%")) for x in near}) == 1


def test_01_a_tf32_matmul_errs_a_thousand_times_more_than_fp32():
    ns = lesson_namespace("01_float_formats", "tf32_error = relative_error")
    assert 1e-7 < ns["fp32_error"] < 5e-7          # the note's "about 2-3e-7", bounded by 1e-6 in print
    assert 2e-4 < ns["tf32_error"] < 4e-4          # "about 3e-4", bounded by (1e-4, 1e-3) in print
    assert ns["tf32_error"] > 500 * ns["fp32_error"]


def test_02_pure_fp16_freezes_near_five_hundredths_while_master_weights_follow_fp32():
    ns = lesson_namespace("02_half_precision_pitfalls")
    fp32, fp16, master, lost = ns["fp32_losses"], ns["fp16_losses"], ns["master_losses"], ns["fp16_lost"]
    assert 0.03 < fp16[-1] < 0.08 and abs(fp16[-100] - fp16[-1]) < 0.01 * fp16[-1]   # frozen
    assert fp32[-1] < 1e-3 and fp32[100] / fp32[-1] > 1e3                           # FP32 keeps going
    assert master[-1] < 2 * fp32[-1]                                                # master ~ FP32
    for losses in (fp32, fp16, master):
        assert all(order_is_stable(losses[i]) for i in (0, 100, 200, 300, -1))
    assert lost[100] == 0 and 0 < lost[200] < 1 and lost[300] == lost[-1] == 1      # none / some / all


def test_02_at_the_end_every_fp16_update_is_below_half_an_ulp_of_its_weight():
    ns = lesson_namespace("02_half_precision_pitfalls", "half_ulp = torch.tensor")
    w16, grad16, half_ulp, update = ns["w16"], ns["grad16"], ns["half_ulp"], ns["update"]
    assert bool((update < 0.99 * half_ulp).all())
    assert torch.equal(w16 - ns["LR"] * grad16, w16)
    assert 4.2 < float(w16.abs().max()) < 7.6


def test_03_loss_scaling_rescues_gradients_and_its_tables_print_stably():
    ns = lesson_namespace("03_loss_scaling", "S_static = s_limit / HEADROOM")
    n = ns["g32"].numel()
    assert prints_stably(ns["loss32"], ".3g", rel=1e-4)
    rows = {scale: ns["fp16_gradient_stats"](scale) for scale in (1.0, 2.0**10, ns["S_static"], ns["s_limit"] * 4)}
    assert all(share_is_stable(share, n) for stats in rows.values() for share in stats)
    zero_static = rows[ns["S_static"]][0]
    assert 0.0005 < zero_static < 0.0015                  # "keeps all but 0.1 % of the gradients"
    assert rows[ns["s_limit"] * 4][1] > 0.01              # four times past the limit: inf/NaN
    assert rows[1.0][0] > 0.4 and rows[2.0**10][0] < 0.15  # "almost half" flushed, far fewer at 2^10
    nonzero, sweep = ns["nonzero"], range(0, 25, 2)
    for k in sweep:
        under, _ = ns["underflow_overflow"](nonzero, 2.0**k)
        late, _ = ns["underflow_overflow"](nonzero * 2.0**-10, 2.0**k)
        # The sweep rounds float32 gradients once, so a share or a count moves only by the
        # gradients that sit on a threshold (2^-25 for zero, 65520 for inf) within float32 noise.
        def on(threshold: float, shift: int) -> int:
            return int(((nonzero.abs().double() * 2.0**shift / threshold - 1).abs() < 2e-6).sum())

        assert share_is_stable(under, n, counts=on(2.0**-25, k), spec=".1%")
        assert share_is_stable(late, n, counts=on(2.0**-25, k - 10), spec=".1%")
        assert on(65520.0, k) == 0                                     # printed as a count


def test_03_the_loss_scaled_step_keeps_what_the_prose_says():
    # Up to the cell before the step's table: that cell then takes a step, changing the FP16 model.
    ns = lesson_namespace("03_loss_scaling", "true_grads = weight_grads(model32)")
    assert ns["median_rel"] < 0.8 * 2**-10
    true_grads = ns["true_grads"]
    n = sum(t != 0.0 for t in true_grads)
    for scale, a_few_lost in ((1.0, True), (ns["S_static"], False)):
        ns["forward_backward"](ns["model16"], torch.float16, scale)
        grads = ns["unscale_gradients"](ns["weight_grads"](ns["model16"]), scale)
        pairs = [(g, t) for g, t in zip(grads, true_grads) if t != 0.0]
        lost = sum(g == 0.0 for g, _ in pairs) / n
        subnormal = sum(0.0 < abs(g) * scale < 2.0**-14 for g, _ in pairs) / n
        off = sum(abs(g - t) > 0.01 * abs(t) for g, t in pairs) / n
        assert (0 < lost < 0.005) if a_few_lost else lost == 0.0     # printed "a few" / "none"
        assert share_is_stable(subnormal, n, spec=".1%") and share_is_stable(off, n)


def test_04_the_sawtooth_has_the_shape_the_lesson_describes():
    ns = lesson_namespace("04_dynamic_loss_scaling", "overflow_steps = [step")
    steps, scales, losses = ns["overflow_steps"], ns["scales_used"], ns["losses_seen"]
    assert steps[:3] == [1, 2, 3] and scales[3] == 2.0**17
    assert min(scales[20:]) == 2.0**16 and max(scales[500:]) in (2.0**18, 2.0**19)
    assert 0.012 <= len(steps) / len(scales) <= 0.028                   # "about 2%", printed as 1-3%
    assert sum(losses[:50]) > 15 * sum(losses[-50:])


def test_05_manual_mixed_precision_is_torch_amp_and_both_stay_near_fp32():
    ns = lesson_namespace("05_amp_training", "manual_losses, manual_scales, manual_params = run_manual()")
    assert ns["manual_losses"] == ns["amp_losses"] and ns["manual_scales"] == ns["amp_scales"]
    for losses in (ns["fp32_losses"], ns["amp_losses"]):
        assert prints_stably(losses[-1], ".3g", rel=2e-4)
    assert abs(ns["amp_losses"][-1] - ns["fp32_losses"][-1]) < 0.05
    gap = max(float((a - b).abs().max()) for a, b in zip(ns["fp32_params"], ns["amp_params"]))
    assert 0.002 < gap < 0.03


def test_06_bf16_needs_no_scaler_where_fp16_loses_most_gradients():
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
