"""Claims of lesson 05_amp_training: autocast's CPU lists, the accumulation window's
semantics, GradScaler's host sync, and torch AMP as the manual recipe, with tolerances,
and margins for the printed roundings (tests/lesson_code.py)."""

import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F

from grader.checks import reference_05
from grader.checks.reference_05 import first_difference
from grader.labs.amp_speed import KernelLossScaler
from lesson_code import lesson_namespace, prints_stably


def _under_cpu_autocast():
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(4, 8, generator=g) for _ in range(2))
    w = torch.randn(8, 8, generator=g)
    labels = torch.tensor([0, 1, 2, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, h2 = F.linear(x, w), F.linear(y, w)
        assert h.dtype == h2.dtype == torch.bfloat16
        return {
            "exp": torch.exp(h), "log": torch.log(h.abs() + 1), "pow": h ** 2,
            "torch.pow": torch.pow(h, 2), "norm": torch.norm(h), "layer_norm": F.layer_norm(h, (8,)),
            "softmax": torch.softmax(h, -1), "log_softmax": F.log_softmax(h, -1), "sum": h.sum(),
            "hand-written, two bf16 tensors": ((h - h2) ** 2).mean(),
            "mse_loss": F.mse_loss(h, h2), "cross_entropy": F.cross_entropy(h, labels),
            "l1_loss": F.l1_loss(h, h2), "nll_loss": F.nll_loss(h, labels),
            "binary_cross_entropy_with_logits": F.binary_cross_entropy_with_logits(h, h2.sigmoid()),
            "hand-written, fp32 target": ((h - y) ** 2).mean(),
        }


STAY_BF16 = ("exp", "log", "pow", "torch.pow", "norm", "layer_norm", "softmax", "log_softmax", "sum",
             "hand-written, two bf16 tensors")
RUN_FP32 = ("mse_loss", "cross_entropy", "l1_loss", "nll_loss", "binary_cross_entropy_with_logits")


@pytest.mark.parametrize("op", STAY_BF16)
def test_on_cpu_autocast_these_ops_of_a_bf16_input_return_bf16(op):
    assert _under_cpu_autocast()[op].dtype == torch.bfloat16


@pytest.mark.parametrize("op", RUN_FP32)
def test_on_cpu_autocast_the_listed_losses_return_fp32_whatever_their_input(op):
    assert _under_cpu_autocast()[op].dtype == torch.float32


def test_a_hand_written_loss_is_fp32_only_through_type_promotion_from_an_fp32_target():
    assert _under_cpu_autocast()["hand-written, fp32 target"].dtype == torch.float32


def test_float_of_a_loss_that_requires_grad_warns_and_item_does_not():
    loss = (torch.randn(3, requires_grad=True) ** 2).sum()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss.item()
        assert not caught
        float(loss)
    assert any("requires_grad=True to a scalar" in str(w.message) for w in caught)


@pytest.mark.slow
def test_grad_scaler_step_reads_found_inf_on_the_host_unless_the_optimizer_is_fused():
    ns = lesson_namespace("05_amp_training", "def item_calls_in_scaler_step")
    assert ns["item_calls_in_scaler_step"](False) == 1
    assert ns["item_calls_in_scaler_step"](True) == 0
    source = inspect.getsource(torch.amp.GradScaler._maybe_opt_step)
    assert "v.item()" in source and "optimizer.step(" in source
    assert '"_step_supports_amp_scaling"' in inspect.getsource(torch.amp.GradScaler.step)
    for cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
        p = [torch.zeros(1, requires_grad=True)]
        assert cls(p, lr=0.1, fused=True)._step_supports_amp_scaling
        assert not getattr(cls(p, lr=0.1), "_step_supports_amp_scaling", False)


@pytest.mark.slow
def test_a_schedule_stepped_on_a_skipped_first_step_warns_and_moves_on():
    ns = lesson_namespace("05_amp_training", "the mistake")
    assert ns["scaler"].get_scale() == 32768.0 and ns["sched"].get_last_lr()[0] == 0.05
    assert any("before `optimizer.step()`" in str(w.message) for w in ns["caught"])


def test_the_kernel_loss_scaler_follows_grad_scaler_update_for_update():
    scaler, ours = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=2), \
        KernelLossScaler(init_scale=4.0, growth_interval=2)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.0)
    for found_inf in (False, False, True, False, False, False, True, True, False, False):
        param.grad = torch.full((1,), float("inf") if found_inf else 1.0)
        scaler.scale(torch.ones(()))
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        ours.update(found_inf)
        assert ours.scale == scaler.get_scale()


def _real_run(params, setup, windows):
    """The reference window with torch.optim.SGD and LambdaLR instead of the grader's stand-ins."""
    model, _, _, scaler = reference_05._build(params, setup)
    opt = torch.optim.SGD(model.parameters(), lr=setup["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / setup["warmup"]))
    opt.steps = 0
    opt.register_step_post_hook(lambda optimizer, args, kwargs: setattr(optimizer, "steps", optimizer.steps + 1))
    records = []
    for window in windows:
        returned = reference_05.reference_window(model, window, opt, sched, scaler, 0.5)
        records.append(reference_05._record(returned, model, sched, scaler))
    return records


def test_the_graders_sgd_and_warmup_schedule_step_exactly_like_torch_optim():
    params, windows = reference_05.windows_from(3, 6, [2, 4, 1, 2, 4, 2], [1, 2, 0, 3, 1, 0],
                                                inf_windows=2)
    setup = {"lr": 0.1, "warmup": 4, "init_scale": 16.0, "growth_interval": 2}
    stand_ins = reference_05.reference_run(params, setup, windows, 0.5)
    assert any(r["returned"][1] for r in stand_ins) and not all(r["returned"][1] for r in stand_ins)
    real = _real_run(params, setup, windows)
    assert first_difference(stand_ins, real, ("skipped", "loss", "scale", "lr", "params")) is None
    assert all(torch.equal(a, b) for r, s in zip(stand_ins, real) for a, b in zip(r["params"], s["params"]))


@pytest.mark.slow
def test_manual_mixed_precision_is_torch_amp_and_both_stay_near_fp32():
    ns = lesson_namespace("05_amp_training", "manual_losses, manual_scales, manual_params = run_manual()")
    assert ns["manual_losses"] == ns["amp_losses"] and ns["manual_scales"] == ns["amp_scales"]
    for losses in (ns["fp32_losses"], ns["amp_losses"]):
        assert prints_stably(losses[-1], ".3g", rel=2e-4)
    assert abs(ns["amp_losses"][-1] - ns["fp32_losses"][-1]) < 0.05
    gap = max(float((a - b).abs().max()) for a, b in zip(ns["fp32_params"], ns["amp_params"]))
    assert 0.002 < gap < 0.03
