"""Claims of lesson 03_loss_scaling (how loss scaling moves the FP16 gradients),
with tolerances, and margins for the printed roundings (tests/lesson_code.py)."""

import pytest
import torch

from lesson_code import lesson_namespace, prints_stably, share_is_stable

pytestmark = pytest.mark.slow


def test_loss_scaling_rescues_gradients_and_its_tables_print_stably():
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


def test_the_loss_scaled_step_keeps_what_the_prose_says():
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
