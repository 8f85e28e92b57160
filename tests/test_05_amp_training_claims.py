"""Claims of lesson 05_amp_training (torch AMP is the manual recipe),
with tolerances, and margins for the printed roundings (tests/lesson_code.py)."""

import pytest

from lesson_code import lesson_namespace, prints_stably

pytestmark = pytest.mark.slow


def test_manual_mixed_precision_is_torch_amp_and_both_stay_near_fp32():
    ns = lesson_namespace("05_amp_training", "manual_losses, manual_scales, manual_params = run_manual()")
    assert ns["manual_losses"] == ns["amp_losses"] and ns["manual_scales"] == ns["amp_scales"]
    for losses in (ns["fp32_losses"], ns["amp_losses"]):
        assert prints_stably(losses[-1], ".3g", rel=2e-4)
    assert abs(ns["amp_losses"][-1] - ns["fp32_losses"][-1]) < 0.05
    gap = max(float((a - b).abs().max()) for a, b in zip(ns["fp32_params"], ns["amp_params"]))
    assert 0.002 < gap < 0.03
