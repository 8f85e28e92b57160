"""Claims of lesson 04_dynamic_loss_scaling (the dynamic loss scale's sawtooth, resuming a
checkpoint with a shorter growth_interval, unscaling at scale 0.0),
with tolerances, and margins for the printed roundings (tests/lesson_code.py)."""

import math

import pytest

from lesson_code import lesson_namespace

pytestmark = pytest.mark.slow


def test_the_sawtooth_has_the_shape_the_lesson_describes():
    ns = lesson_namespace("04_dynamic_loss_scaling", "overflow_steps = [step")
    steps, scales, losses = ns["overflow_steps"], ns["scales_used"], ns["losses_seen"]
    assert steps[:3] == [1, 2, 3] and scales[3] == 2.0**17
    assert min(scales[20:]) == 2.0**16 and max(scales[500:]) in (2.0**18, 2.0**19)
    assert 0.012 <= len(steps) / len(scales) <= 0.028                   # "about 2%", printed as 1-3%
    assert sum(losses[:50]) > 15 * sum(losses[-50:])


def test_load_state_dict_restores_growth_interval_so_a_shorter_one_is_set_after_loading():
    import torch

    checkpoint = {"scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 10,
                  "_growth_tracker": 5}
    resumed = torch.amp.GradScaler("cpu", growth_interval=3)
    resumed.load_state_dict(checkpoint)
    assert resumed.get_growth_interval() == 10               # the checkpoint's, not the constructor's
    ns = lesson_namespace("04_dynamic_loss_scaling", "set_growth_interval(3) after loading")
    as_loaded = ns["gradscaler_trace"](ns["sequence"], state=checkpoint, growth_interval=3)
    shortened = ns["gradscaler_trace"](ns["sequence"], state=checkpoint, set_interval=3)
    assert as_loaded[4] == (16.0, 0)                         # grows on the 10th clean update, as saved
    assert all(scale == 8.0 for scale, _ in shortened[:5]) and shortened[4] == (8.0, 10)


def test_gradscaler_unscales_by_inf_at_scale_zero_and_flags_nothing():
    import torch

    ns = lesson_namespace("04_dynamic_loss_scaling", "python_reciprocal = f")
    scaler, param = ns["at_zero"], ns["param"]
    assert scaler.get_scale() == 0.0
    assert torch.zeros(()).double().reciprocal().float().item() == math.inf  # unscale_'s inv_scale at 0.0
    grads = param.grad.tolist()
    assert grads[:2] == [math.inf, -math.inf] and math.isnan(grads[2])
    assert scaler.state_dict()["_growth_tracker"] == 1       # update() saw no inf: found_inf was 0
    assert ns["python_reciprocal"].startswith("ZeroDivisionError")
    # The kernel itself, without GradScaler around it.
    g, found_inf = torch.tensor([5.0, -7.0, 0.0]), torch.zeros(1)
    torch._amp_foreach_non_finite_check_and_unscale_([g], found_inf, torch.full((1,), math.inf))
    assert g.tolist()[:2] == [math.inf, -math.inf] and math.isnan(g.tolist()[2]) and found_inf.item() == 0.0
