"""Claims of lesson 02_half_precision_pitfalls (pure FP16 freezes, master weights follow FP32),
with tolerances, and margins for the printed roundings (tests/lesson_code.py)."""

import pytest
import torch

from lesson_code import lesson_namespace, order_is_stable

pytestmark = pytest.mark.slow


def test_pure_fp16_freezes_near_five_hundredths_while_master_weights_follow_fp32():
    ns = lesson_namespace("02_half_precision_pitfalls")
    fp32, fp16, master, lost = ns["fp32_losses"], ns["fp16_losses"], ns["master_losses"], ns["fp16_lost"]
    assert 0.03 < fp16[-1] < 0.08 and abs(fp16[-100] - fp16[-1]) < 0.01 * fp16[-1]   # frozen
    assert fp32[-1] < 1e-3 and fp32[100] / fp32[-1] > 1e3                           # FP32 keeps going
    assert master[-1] < 2 * fp32[-1]                                                # master ~ FP32
    for losses in (fp32, fp16, master):
        assert all(order_is_stable(losses[i]) for i in (0, 100, 200, 300, -1))
    assert lost[100] == 0 and 0 < lost[200] < 1 and lost[300] == lost[-1] == 1      # none / some / all


def test_at_the_end_every_fp16_update_is_below_half_an_ulp_of_its_weight():
    ns = lesson_namespace("02_half_precision_pitfalls", "half_ulp = torch.tensor")
    w16, grad16, half_ulp, update = ns["w16"], ns["grad16"], ns["half_ulp"], ns["update"]
    assert bool((update < 0.99 * half_ulp).all())
    assert torch.equal(w16 - ns["LR"] * grad16, w16)
    assert 4.2 < float(w16.abs().max()) < 7.6
