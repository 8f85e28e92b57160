"""Claims of lesson 06_bf16_and_fp8 (BF16 needs no scaler where FP16 loses gradients),
with tolerances, and margins for the printed roundings (tests/lesson_code.py)."""

import pytest

from lesson_code import lesson_namespace, order_is_stable

pytestmark = pytest.mark.slow


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
