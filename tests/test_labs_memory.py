"""grader/labs/memory.py measures what it says, and lesson 07's self-checks teach rather than crash."""

import torch

from grader.labs.memory import (MemoryCounter, Recipe, SavedActivations, TrainingRun, measure_model_states,
                                storage_bytes)
from grader.selfcheck.memory import (check_bytes_per_param, check_kahan_adamw_step,
                                     check_stochastic_round_to_bf16)


def test_a_view_and_its_base_count_once():
    base = torch.zeros(100)
    assert storage_bytes([base, base[10:20], base.view(10, 10)]) == 400
    assert storage_bytes([base, torch.zeros(3, dtype=torch.bfloat16)]) == 406


def test_the_counter_sees_an_allocation_and_its_release():
    with MemoryCounter() as mem:
        a = torch.ones(1000)
        b = a * 2          # a second kilo-float, live with the first
        del a, b
        c = torch.ones(10)
    assert mem.peak == 8000 and mem.live == 40 and mem.ops == 3
    del c


def test_the_counter_starts_from_what_is_already_alive():
    w = torch.zeros(256)
    with MemoryCounter([w], timeline=True) as mem:
        _ = w + 1
    assert mem.timeline == [2048] and mem.peak == 2048


def test_saved_activations_leave_the_parameters_out():
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8, requires_grad=True)
    with SavedActivations(exclude=layer.parameters()) as saved:
        layer(x).relu()
    # linear saves x (its weight is excluded); relu saves its output (4 x 8 floats)
    assert saved.bytes == 2 * 4 * 8 * 4 and saved.count >= 2


def test_a_master_recipe_keeps_sixteen_bytes_and_only_one_fp32_gradient_at_a_time():
    model = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(4)])
    m = measure_model_states(model, Recipe("bf16", master=True), (torch.randn(2, 32), torch.randn(2, 32)))
    assert m.per_param == 16 and m.bytes["master"] == 4 * m.params
    # 16 kept, plus one tensor's FP32 gradient (1 B/param here) and Adam's temporaries for that
    # tensor (2 B/param); converting all four gradients at once would add 4 B/param, not 1
    assert m.peak < 19.5 * m.params


def test_a_training_run_updates_the_bf16_weights_from_the_master():
    run = TrainingRun(torch.nn.Linear(4, 4), Recipe("bf16", master=True), lr=0.1)
    before = run.params[0].detach().clone()
    run.step(torch.randn(8, 4), torch.randn(8, 4))
    assert not torch.equal(before, run.params[0]) and run.params[0].dtype == torch.bfloat16
    assert torch.equal(run.params[0], run.masters[0].to(torch.bfloat16))


def _stub(*args, **kwargs):
    raise NotImplementedError("Exercise 7.x")


def test_the_self_checks_say_not_implemented_for_a_stub(capsys):
    for check in (check_bytes_per_param, check_stochastic_round_to_bf16, check_kahan_adamw_step):
        assert check(_stub) is None
        out = capsys.readouterr().out
        assert "not implemented yet" in out and "Traceback" not in out


def test_round_to_nearest_fails_the_stochastic_rounding_self_check_with_a_cause(capsys):
    check_stochastic_round_to_bf16(lambda x, generator: x.to(torch.bfloat16))
    out = capsys.readouterr().out
    assert "FAIL" in out and "Likely cause" in out and "Traceback" not in out


def test_rounding_without_compensation_fails_the_kahan_self_check(capsys):
    def adamw_without_comp(param, grad, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        opt = state.setdefault("opt", torch.optim.AdamW([torch.nn.Parameter(param.float())], lr=lr,
                                                         betas=betas, eps=eps, weight_decay=weight_decay))
        shadow = opt.param_groups[0]["params"][0]
        with torch.no_grad():
            shadow.copy_(param.float())
        shadow.grad = grad.float()
        opt.step()
        param.copy_(shadow.detach().to(torch.bfloat16))

    check_kahan_adamw_step(adamw_without_comp)
    out = capsys.readouterr().out
    assert "FAIL" in out and "Likely cause" in out and "Traceback" not in out
