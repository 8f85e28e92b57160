"""Hidden checks for lesson 02, half-precision pitfalls.

The reference update, `master - lr * grad.float()`, is computed here in FP32.
Inputs cross as plain lists and are turned into tensors in the worker by a small
helper, so the learner receives ordinary contiguous tensors. With a power-of-two
lr every FP32 formulation (fused or not, even via float64) rounds once, so those
results are compared exactly; other learning rates get a few-ulp tolerance.
"""

import math

import torch
from hypothesis import strategies as st

from grader.checkkit import CheckFailed, draw, exercise
from grader.learner import Ref

HELPER = '''
def _grader_tensor(values, dtype, shape):
    return torch.tensor(values, dtype=getattr(torch, dtype)).reshape(shape)

def _grader_step(master, grad, shape, lr):
    return master_weight_step(_grader_tensor(master, "float32", shape),
                              _grader_tensor(grad, "float16", shape), lr)

def _grader_shares_memory(out, master):
    first = out[0] if isinstance(out, (tuple, list)) and out else out
    return (isinstance(first, torch.Tensor)
            and first.untyped_storage().data_ptr() == master.untyped_storage().data_ptr())
'''
FP16_UPDATE = ("the update was done in FP16 (or the weights went through FP16 before the update): "
               "compute master - lr * grad.float() in FP32, then make the copy with .half()")
FP16_EITHER = ("lr * grad was formed, or the update applied, in FP16: both lose this small "
               "update; compute master - lr * grad.float() in FP32, then make the copy with .half()")
FP16_PRODUCT = ("lr * grad was computed in FP16 before converting: small products round or underflow "
                "there; convert first, master - lr * grad.float()")


def _half_ulp16(x: float) -> float:
    """Half the gap between FP16 neighbours at |x| (subnormal gap below 2^-14)."""
    exponent = max(math.frexp(abs(x))[1] - 1, -14) if x else -14
    return 2.0 ** (exponent - 10) / 2


def _shape_of(n: int) -> list:
    return {1: [1], 6: [2, 3], 12: [3, 4], 8: [2, 2, 2]}.get(n, [n])


def _reference(master: list, grad: list, shape: list, lr: float) -> torch.Tensor:
    m = torch.tensor(master, dtype=torch.float32).reshape(shape)
    g = torch.tensor(grad, dtype=torch.float16).reshape(shape)
    return m - lr * g.float()


def _fp16_update(master, grad, shape, lr) -> torch.Tensor:
    m = torch.tensor(master, dtype=torch.float32).reshape(shape)
    g = torch.tensor(grad, dtype=torch.float16).reshape(shape)
    return (m.half() - lr * g).float()


def _fp16_product(master, grad, shape, lr) -> torch.Tensor:
    m = torch.tensor(master, dtype=torch.float32).reshape(shape)
    g = torch.tensor(grad, dtype=torch.float16).reshape(shape)
    return m - (lr * g).float()


def _case_text(master, grad, shape, lr) -> str:
    def short(xs):
        head = ", ".join(repr(x) for x in xs[:3])
        return f"[{head}{', …' if len(xs) > 3 else ''}]"
    return (f"master_weight_step(master=float32 {shape} {short(master)}, "
            f"grad=float16 {shape} {short(grad)}, lr={lr!r})")


def _well_formed(out, shape) -> str:
    """Why the result is not a (float32, float16) pair of the right shape, or ''."""
    if not isinstance(out, tuple) or len(out) != 2:
        return "return a tuple of two tensors: (new_master, model_copy)"
    if not all(isinstance(t, torch.Tensor) for t in out):
        return "both items must be torch tensors (not lists, arrays or numbers)"
    if out[0].dtype != torch.float32:
        return f"the new master must stay float32 (got {out[0].dtype})"
    if out[1].dtype != torch.float16:
        return f"the model copy must be float16 (got {out[1].dtype}); use new_master.half()"
    if list(out[0].shape) != shape or list(out[1].shape) != shape:
        return f"both tensors must have the input's shape {shape}"
    return ""


def _check_steps(learner, cases: list[tuple], what: str, exact: bool) -> None:
    learner.run(HELPER)
    outcomes = learner.map("_grader_step", cases)
    for args, outcome in zip(cases, outcomes):
        if not outcome.ok:
            raise outcome.raised
        expected = _reference(*args)
        got = outcome.value
        problem = _well_formed(got, args[2])
        if problem:
            raise CheckFailed(what, _case_text(*args), "(float32 tensor, float16 tensor)", got, problem)
        new_master = got[0]
        if exact:
            bad = new_master != expected
        else:
            tol = 2.0 ** -21 * (torch.tensor(args[0]).abs().reshape(args[2])
                                + abs(args[3]) * torch.tensor(args[1]).abs().reshape(args[2]))
            bad = (new_master.double() - expected.double()).abs() > tol.double()
        if bool(bad.any()):
            as_fp16_update = torch.equal(new_master, _fp16_update(*args))
            as_fp16_product = torch.equal(new_master, _fp16_product(*args))
            if as_fp16_update and as_fp16_product:
                cause = FP16_EITHER
            elif as_fp16_update:
                cause = FP16_UPDATE
            elif as_fp16_product:
                cause = FP16_PRODUCT
            elif torch.equal(new_master, _reference(args[0], args[1], args[2], -args[3])):
                cause = "the update has the wrong sign: subtract lr * grad"
            else:
                cause = "new_master = master - lr * grad.float(), all in float32"
            i = int(bad.reshape(-1).nonzero()[0])
            m, g, lr = args[0][i], args[1][i], args[3]
            case = (f"{_case_text(*args)}; first wrong element [flat index {i}]: master {m!r}, "
                    f"grad {g!r}, lr * grad = {lr * g:.4g}, half an FP16 ulp of master = {_half_ulp16(m):.4g}")
            raise CheckFailed(f"{what} (showing new_master at that element)", case,
                              expected.reshape(-1)[i].item(), new_master.reshape(-1)[i].item(), cause)
        if not torch.equal(got[1], new_master.half()):
            raise CheckFailed(f"{what}: the FP16 copy", _case_text(*args), new_master.half(), got[1],
                              "the copy must be the *updated* master rounded to FP16: new_master.half()")


# -- drawn inputs ---------------------------------------------------------------------

MASTER_F32 = st.floats(min_value=-1e4, max_value=1e4, width=32)
GRAD_F16 = st.floats(allow_nan=False, allow_infinity=False, width=16)
PAIRED_LISTS = st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.lists(MASTER_F32, min_size=n, max_size=n), st.lists(GRAD_F16, min_size=n, max_size=n)))


def _drawn_power_of_two_cases(seed):
    strategy = st.tuples(PAIRED_LISTS, st.integers(6, 20))
    drawn = draw(strategy, n=30, seed=seed, key="02.pow2")
    return [(m, g, _shape_of(len(m)), 2.0 ** -k) for (m, g), k in drawn]


def _swamped_cases() -> list[tuple]:
    """Weights in [1, 8) whose FP16 update would be lost: |lr * grad| < half an FP16 ulp."""
    gen = torch.Generator().manual_seed(2)
    cases = []
    for n, k in [(12, 10), (8, 12), (6, 14), (1, 11)]:
        master = (1 + 7 * torch.rand(n, generator=gen)).tolist()   # not FP16 values: exact FP32 only
        grad = (torch.randn(n, generator=gen) * 0.2).half().tolist()
        cases.append((master, grad, _shape_of(n), 2.0 ** -k))
    cases.append(([1.0, 1.0, 2.0, 4.0, -1.0, 1024.0], [0.25, -0.5, 0.125, 1.0, 0.5, 64.0], [2, 3], 2.0 ** -10))
    return cases


# -- master_weight_step (6 pts) -----------------------------------------------------

@exercise("master_weight_step", points=1)
def test_step_returns_fp32_master_and_its_fp16_copy(learner):
    """master_weight_step returns a tuple (float32 new master, float16 copy of it) with the input's shape."""
    cases = [([1.5, -2.25, 3.0, 0.5, 8.0, -0.125, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
              [1.0, 0.5, -0.25, 2.0, 1.0, 4.0, 0.0, -1.0, 0.5, 0.5, 0.5, 0.5], [3, 4], 0.0625),
             ([3.0], [1.0], [1], 0.5)]
    _check_steps(learner, cases, "master_weight_step returns (new FP32 master, its FP16 copy)", exact=True)


@exercise("master_weight_step", points=2)
def test_step_keeps_updates_that_fp16_would_swamp(learner, seed):
    """The FP32 master receives updates smaller than half an FP16 ulp, bit-exactly (power-of-two lr)."""
    cases = _swamped_cases() + _drawn_power_of_two_cases(seed)
    _check_steps(learner, cases, "the FP32 master gets every update, even ones FP16 would swamp",
                 exact=True)


@exercise("master_weight_step", points=1)
def test_step_keeps_products_that_underflow_in_fp16(learner):
    """lr * grad is formed in FP32, so products below 2^-24 still reach the master."""
    cases = [([2.0 ** -10], [2.0 ** -14], [1], 2.0 ** -12),
             ([1e-3, -2e-3, 5e-4, 1e-4, 3e-3, 1e-2], [6e-5, -6e-5, 1e-4, 2e-6, -3e-7, 1e-5], [2, 3], 2.0 ** -14)]
    cases = [(list(torch.tensor(m).tolist()), list(torch.tensor(g).half().tolist()), s, lr)
             for m, g, s, lr in cases]
    _check_steps(learner, cases, "tiny lr * grad products survive in FP32", exact=True)


@exercise("master_weight_step", points=1)
def test_step_matches_fp32_for_any_learning_rate(learner):
    """With learning rates such as 1e-3 or 0.1 the master matches the FP32 update to within a few ulps."""
    gen = torch.Generator().manual_seed(3)
    cases = []
    for n, lr in [(12, 1e-3), (8, 0.1), (6, 3e-4), (1, 0.37)]:
        master = (torch.randn(n, generator=gen) * 3).tolist()
        grad = (torch.randn(n, generator=gen) * 2).half().tolist()
        cases.append((master, grad, _shape_of(n), lr))
    _check_steps(learner, cases, "the master follows master - lr * grad in FP32", exact=False)


@exercise("master_weight_step", points=1)
def test_step_does_not_modify_master_or_grad(learner):
    """master_weight_step returns a new master tensor and leaves both inputs unchanged."""
    master = [1.0, -2.5, 3.25, 0.75, 100.0, -0.5]
    grad = [0.5, 1.0, -2.0, 0.25, 8.0, -1.0]
    shape, lr = [2, 3], 0.125
    learner.run(HELPER)
    learner.call("_grader_tensor", master, "float32", shape, store="_grader_master")
    learner.call("_grader_tensor", grad, "float16", shape, store="_grader_grad")
    learner.call("master_weight_step", Ref("_grader_master"), Ref("_grader_grad"), lr, store="_grader_out")
    case = _case_text(master, grad, shape, lr)
    after = learner.get("_grader_grad")
    if not (isinstance(after, torch.Tensor) and after.dtype == torch.float16
            and after.reshape(-1).tolist() == grad):
        raise CheckFailed("grad is not modified", case, torch.tensor(grad, dtype=torch.float16).reshape(shape),
                          after, "do not write into grad: no grad.mul_(...), grad[...] = ..., or grad.data = ...")
    after = learner.get("_grader_master")
    if not (isinstance(after, torch.Tensor) and after.dtype == torch.float32
            and after.reshape(-1).tolist() == master):
        raise CheckFailed("master is not modified", case, torch.tensor(master).reshape(shape), after,
                          "return a new tensor (master - lr * grad.float()); master -= ..., sub_ or "
                          "master.copy_(...) change the caller's tensor")
    if learner.call("_grader_shares_memory", Ref("_grader_out"), Ref("_grader_master")):
        raise CheckFailed("the new master is a new tensor, not a view of the input", case,
                          "a new tensor", "a tensor sharing master's memory",
                          "build the result with master - lr * grad.float(), which allocates a new tensor")
