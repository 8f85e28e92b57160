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


def test_below_a_power_of_two_the_gap_is_half_as_large():
    one = torch.tensor(1.0, dtype=torch.float16)
    assert (one - torch.tensor(3e-4, dtype=torch.float16)).item() == 1 - 2.0 ** -11       # 0.99951, not 1.0
    assert (one + torch.tensor(3e-4, dtype=torch.float16)).item() == 1.0                   # above 1: swamped
    assert (one - torch.tensor(2.0 ** -12, dtype=torch.float16)).item() == 1.0             # the tie goes to even 1.0
    assert (one - torch.tensor(2.5e-4, dtype=torch.float16)).item() == 1 - 2.0 ** -11


def test_the_share_of_lost_updates_climbs_gradually_to_all():
    lost = lesson_namespace("02_half_precision_pitfalls")["fp16_lost"]
    first_lost = next(i for i, x in enumerate(lost) if x > 0)
    all_lost = next(i for i, x in enumerate(lost) if x == 1)
    distinct = {round(x * 16) for x in lost[first_lost:all_lost]}
    assert 100 < first_lost < 200 < all_lost <= 300                # the table's none / some / all
    assert len(distinct) >= 4                                       # several plateaus, not one jump


def test_the_optimizers_reference_update_is_what_torch_optim_sgd_steps():
    """The hidden checks replay torch.optim.sgd.sgd, the function SGD.step calls; on CPU they agree
    bit for bit with SGD.step over drawn settings, including missing gradients."""
    from torch.optim.sgd import sgd

    gen = torch.Generator().manual_seed(0)
    for settings in [dict(lr=0.1), dict(lr=0.01, momentum=0.9, dampening=0.1, weight_decay=0.01),
                     dict(lr=0.5, momentum=0.5, nesterov=True, weight_decay=0.25)]:
        param = torch.nn.Parameter(torch.randn(7, generator=gen))
        optimizer = torch.optim.SGD([param], **settings)
        mine, buffers = param.detach().clone(), [None]
        for step in range(6):
            grad = torch.randn(7, generator=gen) if step != 3 else None
            param.grad = grad
            optimizer.step()
            if grad is not None:
                full = {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False, **settings}
                sgd([mine], [grad], buffers, foreach=False, maximize=False, **full)
            assert torch.equal(mine, param.detach())
            if buffers[0] is not None:
                assert torch.equal(buffers[0], optimizer.state[param]["momentum_buffer"])


def test_master_weight_sgd_matches_torch_sgd_and_momentum_does_not_rescue_pure_fp16():
    ns = lesson_namespace("02_half_precision_pitfalls")
    assert ns["worst"] < 1e-7                                       # printed against 1e-6
    losses = ns["momentum_losses"]
    fp32, fp16, master = losses["fp32"], losses["fp16"], losses["master"]
    for run in (fp32, fp16, master):
        assert all(order_is_stable(run[i]) for i in (0, 100, 200, 300, -1))
    assert 0.02 < fp16[-1] < 0.08 and abs(fp16[-50] - fp16[-1]) < 0.01 * fp16[-1]   # stalled near 1e-2
    assert fp32[-1] < 3e-4 and master[-1] < 2 * fp32[-1]                           # master follows FP32
