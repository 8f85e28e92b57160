"""Claims of lesson 03_loss_scaling (how loss scaling moves the FP16 gradients, and which
tensor limits a static scale), with tolerances, and margins for the printed roundings
(tests/lesson_code.py)."""

import io
import math
from contextlib import redirect_stdout

import nbformat
import pytest
import torch

from conftest import SOLUTIONS
from lesson_code import lesson_namespace, prints_stably, share_is_stable

pytestmark = pytest.mark.slow

LOG2_NOISE = 1e-4  # log2 of a gradient moves by ~1e-6 when another CPU sums in another order


def _near(values: torch.Tensor, threshold: float, shift: int) -> int:
    """How many |g| * 2**shift sit within float32 noise of a rounding threshold of FP16."""
    return int(((values.abs().double() * 2.0**shift / threshold - 1).abs() < 2e-6).sum())


def test_the_per_tensor_table_and_the_histogram_print_stably():
    ns = lesson_namespace("03_loss_scaling", "print(f\"{label:<20}")
    assert prints_stably(ns["loss32"], ".3g", rel=1e-4)
    for name in ns["ALL"]:
        g = ns["grads32"][name]
        e = torch.log2(g[g != 0].abs())
        for value in (e.min(), e.median(), e.max()):
            assert prints_stably(float(value), "6.1f", step=LOG2_NOISE), (name, float(value))
    for g in (ns["act32"], ns["weight32"]):
        a = g[g != 0].abs()
        normal, zero = (a >= 2.0**-14).float().mean().item(), (a <= 2.0**-25).float().mean().item()
        for share in (normal, zero, 1 - normal - zero):
            assert share_is_stable(share, len(a), counts=_near(a, 2.0**-25, 0) + _near(a, 2.0**-14, 0) + 1,
                                   spec=".1%")
    a = ns["act32"][ns["act32"] != 0].abs()
    assert 0.4 < (a <= 2.0**-25).float().mean() < 0.5                 # "almost half" of the activation gradients
    assert 0.08 < (a >= 2.0**-14).float().mean() < 0.15                # "about a tenth" normal
    w = ns["weight32"].abs()
    assert (w >= 2.0**-14).float().mean() > 0.9                        # "almost all normal"
    medians = {n: torch.log2(ns["grads32"][n].abs()).median().item() for n in ns["ALL"]}
    assert all(-25.5 < medians[n] < -19.5 for n in ns["ACTIVATIONS"])  # "around 2^-25 to 2^-20"
    assert all(-11.5 < medians[n] < -4.5 for n in ns["WEIGHTS"])       # "between 2^-11 and 2^-5"


def test_a_weight_gradient_sets_the_static_scale_and_the_activations_alone_overflow_it():
    ns = lesson_namespace("03_loss_scaling", "S_activations = ")
    stats, top, top_activation = ns["stats"], ns["top"], ns["top_activation"]
    assert top["name"] == "6.bias" and top_activation["name"] == "out.6"
    assert prints_stably(math.log2(top["max_abs"]), ".1f", step=LOG2_NOISE)
    assert prints_stably(math.log2(top_activation["max_abs"]), ".1f", step=LOG2_NOISE)
    assert 2.5 < top["max_abs"] / top_activation["max_abs"] < 3.1   # "about 2^1.5 = 2.8 times"
    S, S_act, headroom = ns["S_static"], ns["S_activations"], ns["HEADROOM"]
    assert (S, S_act) == (2.0**17, 2.0**21)                           # printed, and the fallback constants
    # Far enough from the bound that another CPU's last bits cannot move the power of two.
    assert S * headroom * top["max_abs"] < 65504 * 0.999 and 2 * S * headroom * top["max_abs"] > 65504 * 1.001
    assert S_act * top_activation["max_abs"] < 65504 * 0.999 < 65504 * 1.001 < S_act * top["max_abs"]
    with_headroom = ns["choose_static_scale"]([s for s in stats if s["kind"] == "activation"], headroom)["scale"]
    assert with_headroom == 2.0**18 and 4 < 65504 / (with_headroom * top["max_abs"]) < 5  # "only about 4x"
    assert ns["choice"]["underflowing"] == []
    assert all(S * s["low_abs"] > 2.0**-25 * 1.001 for s in stats)   # "every 1 % quantile stays above"


def test_the_measured_sweep_and_the_real_backward_pass_agree_and_print_stably():
    ns = lesson_namespace("03_loss_scaling", "tensors with an inf or NaN")
    every = torch.cat([ns["grads32"][n] for n in ns["ALL"]])
    every = every[every != 0]
    n, k_static = len(every), round(math.log2(ns["S_static"]))
    for k in ns["exponents"][::2] + [k_static]:  # the printed rows
        assert share_is_stable(ns["under"][k], n, counts=_near(every, 2.0**-25, k) + 3)
        assert share_is_stable(ns["under_late"][k], n, counts=_near(every, 2.0**-25, k - 10) + 3)
        assert _near(every, 65520.0, k) == 0                          # the overflow counts are exact
    assert 0.0005 < ns["under"][k_static] < 0.0015                    # "about 0.1 % are lost"
    assert 0.13 < ns["under_late"][k_static] < 0.17                   # "about 15 %" later
    assert ns["over"][k_static] == 0 and ns["over"][20] == 0 < ns["over"][21]  # first overflow at 2^21...
    first = ns["measure_scale"](ns["grads32"], 2.0**21)
    assert [name for name, c in first.items() if c["overflow"]] == ["6.bias"]   # ... in 6.bias
    total = len(torch.cat([ns["grads32"][name] for name in ns["ALL"]]))
    rows = {s: ns["fp16_gradient_stats"](s) for s in (1.0, 2.0**10, ns["S_static"], ns["S_activations"])}
    for zero, _, off in rows.values():
        assert share_is_stable(zero, total) and share_is_stable(off, total)
    assert 0.30 < rows[1.0][0] < 0.36 and rows[2.0**10][0] < 0.1     # "a third" flushed, far fewer at 2^10
    assert 0.0005 < rows[ns["S_static"]][0] < 0.0015                  # "all but about 0.1 %"
    assert rows[1.0][1] == rows[ns["S_static"]][1] == 0
    # At 2^21 only the output bias overflows: its scaled gradients sit clear of 65520 either way.
    bias = ns["grads32"]["6.bias"].abs().double() * ns["S_activations"]
    assert ((bias / 65520 - 1).abs() > 0.01).all()
    assert rows[ns["S_activations"]][1] == int((bias >= 65520).sum()) > 0
    _, grads16 = ns["forward_backward"](ns["model16"], torch.float16, ns["S_activations"])
    assert [name for name in ns["ALL"] if not torch.isfinite(grads16[name]).all()] == ["6.bias"]


def _step_cell() -> str:
    nb = nbformat.read(SOLUTIONS / "03_loss_scaling.ipynb", as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code" and "def loss_scaled_step" in c.source)


def test_the_loss_scaled_step_keeps_what_the_prose_says_and_runs_again_the_same():
    ns = lesson_namespace("03_loss_scaling", "true_grads = weight_grads(grads32)")
    assert ns["median_rel"] < 0.8 * 2**-10
    true_grads = ns["true_grads"]
    n = sum(t != 0.0 for t in true_grads)
    for scale, subnormal_share in ((1.0, (0.05, 0.08)), (ns["S_static"], (0.0, 0.0005))):
        _, grads16 = ns["forward_backward"](ns["model16"], torch.float16, scale)
        grads = ns["unscale_gradients"](ns["weight_grads"](grads16), scale)
        pairs = [(g, t) for g, t in zip(grads, true_grads) if t != 0.0]
        assert sum(g == 0.0 for g, _ in pairs) == 0                  # printed "none" at both scales
        assert min(abs(t) for _, t in pairs) * scale > 2.0**-24       # ... far from FP16's 2^-25
        subnormal = sum(0.0 < abs(g) * scale < 2.0**-14 for g, _ in pairs) / n
        assert subnormal_share[0] <= subnormal <= subnormal_share[1]  # "about 6 %" at S = 1
        assert share_is_stable(subnormal, n, spec=".1%")
    # The cell takes a step on a fresh FP16 copy, so running it twice prints the same table.
    namespace, outputs = dict(ns), []
    for _ in range(2):
        with redirect_stdout(io.StringIO()) as out:
            exec(_step_cell(), namespace)
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] and "skipped" in outputs[0]


@pytest.mark.parametrize("exercise, mistake", [("choose_static_scale", "activations_only"),
                                               ("choose_static_scale", "clamps_scale_at_one"),
                                               ("measure_scale", "overflow_above_65504"),
                                               ("measure_scale", "counts_true_zeros_as_lost")])
def test_the_public_self_checks_flag_a_wrong_answer_with_a_cause(exercise, mistake, capsys):
    from grader.selfcheck import loss_scaling

    source = (SOLUTIONS.parent / "tests" / "fixtures" / "wrong" / "03_loss_scaling" / exercise / f"{mistake}.py")
    namespace = {"math": math, "torch": torch}
    exec(source.read_text(encoding="utf-8"), namespace)
    getattr(loss_scaling, f"check_{exercise}")(namespace[exercise])
    out = capsys.readouterr().out
    assert "FAIL" in out and "Likely cause" in out and "Traceback" not in out
