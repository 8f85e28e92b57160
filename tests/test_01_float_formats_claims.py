"""Claims of lesson 01_float_formats: the TF32 matmul errors (with tolerances and margins for
the printed bounds, tests/lesson_code.py), and the torch 2.13 behaviours the lesson states:
TF32 defaults and flags, FP8 E4M3 saturation, double rounding of float64 casts."""

import math
import subprocess
import sys

import pytest
import torch

from lesson_code import lesson_namespace

pytestmark = pytest.mark.slow


def test_a_tf32_matmul_errs_a_thousand_times_more_than_fp32():
    ns = lesson_namespace("01_float_formats", "tf32_error = relative_error")
    assert 1e-7 < ns["fp32_error"] < 5e-7          # the note's "about 2-3e-7", bounded by 1e-6 in print
    assert 2e-4 < ns["tf32_error"] < 4e-4          # "about 3e-4", bounded by (1e-4, 1e-3) in print
    assert ns["tf32_error"] > 500 * ns["fp32_error"]


def test_truncating_tf32_inputs_costs_about_two_and_a_half_times_rounding_them():
    ns = lesson_namespace("01_float_formats", "tf32_error = relative_error")
    ratio = ns["truncated_error"] / ns["tf32_error"]
    assert 2.3 < ratio < 3.0                        # "about two and a half", printed as within (2, 3.5)


def test_tf32_is_on_for_convolutions_and_off_for_matmuls_by_default():
    # A fresh process: the defaults, untouched by anything else this session has set.
    code = ("import torch; b = torch.backends; "
            "print(b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.conv.fp32_precision, "
            "b.cuda.matmul.fp32_precision)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "tf32", "none"]


def test_reading_allow_tf32_after_setting_the_new_api_raises():
    code = ("import torch\n"
            "torch.backends.cuda.matmul.fp32_precision = 'tf32'\n"
            "try:\n    torch.backends.cuda.matmul.allow_tf32\nexcept RuntimeError as e:\n"
            "    print('raised', 'mix of the legacy and new APIs' in str(e))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "raised True"


def test_torch_2_13_saturates_e4m3fn_overflow_and_infinities_to_448():
    x = torch.tensor([449.0, 464.0, 465.0, 480.0, 1e6, 3.4e38, math.inf, -465.0, -math.inf])
    stored = x.to(torch.float8_e4m3fn).float().tolist()
    assert stored == [448.0] * 7 + [-448.0, -448.0]
    assert math.isnan(torch.tensor([math.nan]).to(torch.float8_e4m3fn).float().item())


def test_torch_casts_float64_through_float32_so_it_can_round_twice():
    # Just above the midpoint between 1 and the next number, by less than float32 can hold:
    # rounded once, x goes up; through float32 it lands on the midpoint, which ties to even 1.0.
    layouts = {torch.float16: (5, 10, False), torch.bfloat16: (8, 7, False),
               torch.float8_e5m2: (5, 2, False), torch.float8_e4m3fn: (4, 3, True)}
    encode = lesson_namespace("01_float_formats")["encode"]
    for dtype, (e, m, fn) in layouts.items():
        x = 1 + 2.0 ** -(m + 1) + 2.0 ** -40
        assert torch.tensor([x], dtype=torch.float64).to(dtype).item() == 1.0
        assert encode(x, e, m, fn=fn) == encode(1 + 2.0 ** -m, e, m, fn=fn)      # the lesson's encode rounds once


def test_every_share_in_the_rounding_table_counts_out_of_all_drawn_values():
    ns = lesson_namespace("01_float_formats", "def rounded")
    x = ns["x"]
    for name, _, _, flushed, above in ns["summary"]:
        rounded = ns["rounded"](name)
        assert flushed * len(x) == int((rounded == 0).sum())
        assert above * len(x) == int((x > ns["FINITE_RANGE"][name][1]).sum())


def test_the_hidden_checks_exact_reference_agrees_with_torch_where_torch_has_the_format():
    """encode's checks grade made-up formats against an exact search; on the real formats that
    search must give torch's bits, or it could not be trusted on the others."""
    import importlib
    import warnings

    with warnings.catch_warnings():                 # its exercise marks belong to the grader's pytest
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        checks = importlib.import_module("grader.checks.test_01_float_formats")
    for dtype, (e, m, fn) in checks.LAYOUT.items():
        values = checks.boundary_values(dtype)[::23]
        xs = values + [-v for v in values[::5]] + [0.0, -0.0, math.inf, -math.inf]
        assert [checks.exact_encode(x, e, m, fn) for x in xs] == checks.torch_encode(xs, dtype), dtype
