"""Claims of lesson 01_float_formats (TF32 against FP32 matmul error),
with tolerances, and margins for the printed roundings (tests/lesson_code.py)."""

import pytest

from lesson_code import lesson_namespace

pytestmark = pytest.mark.slow


def test_a_tf32_matmul_errs_a_thousand_times_more_than_fp32():
    ns = lesson_namespace("01_float_formats", "tf32_error = relative_error")
    assert 1e-7 < ns["fp32_error"] < 5e-7          # the note's "about 2-3e-7", bounded by 1e-6 in print
    assert 2e-4 < ns["tf32_error"] < 4e-4          # "about 3e-4", bounded by (1e-4, 1e-3) in print
    assert ns["tf32_error"] > 500 * ns["fp32_error"]
