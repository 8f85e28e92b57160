"""Hidden checks for lesson 02, half-precision pitfalls.

master_weight_step: the reference update, `master - lr * grad.float()`, is computed
here in FP32. Inputs cross as plain lists and are turned into tensors in the worker
by a small helper, so the learner receives ordinary contiguous tensors. With a
power-of-two lr every FP32 formulation (fused or not, even via float64) rounds
once, so those results are compared exactly; other learning rates get a few-ulp
tolerance.

MasterWeightSGD: a driver shipped to the worker builds FP16 leaf tensors, runs the
learner's optimizer through a batch of gradient sequences in one round trip and
returns its masters, buffers and FP16 params after every step. Here, each step is
replayed from the learner's own state before it with torch.optim.SGD's update
function (`torch.optim.sgd.sgd`, what `SGD.step` calls; a test in tests/ shows the
two agree), so one slip is reported at the step it happens, and a correct optimizer
is judged within a few float32 ulps per step: torch may fuse a multiply and an add
(`add_(..., alpha=...)` on AVX2 CPUs), a learner's code need not.
"""

import math

import torch
from hypothesis import strategies as st
from torch.optim.sgd import sgd as torch_sgd

from grader.checkkit import CheckFailed, draw, exercise, render
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


# -- MasterWeightSGD (10 pts) ---------------------------------------------------------------

SGD = "MasterWeightSGD"
SGD_DRIVER = """
def _grader_02_snapshot(opt, params):
    def plain(t):
        return t.detach().clone() if isinstance(t, torch.Tensor) else t
    def plain_list(name):
        items = getattr(opt, name, "<missing>")
        return [plain(t) for t in items] if isinstance(items, (list, tuple)) else items
    objects = getattr(opt, "params", None)
    same = isinstance(objects, (list, tuple)) and len(objects) == len(params) and all(
        a is b for a, b in zip(objects, params))
    return (plain_list("master"), plain_list("momentum_buffer"), [plain(p) for p in params], same)


def _grader_02_sgd_runs(cases):
    runs = []
    for values, shapes, settings, steps in cases:
        params = [torch.tensor(v, dtype=torch.float16).reshape(s).requires_grad_()
                  for v, s in zip(values, shapes)]
        opt = MasterWeightSGD(list(params), **settings)
        snapshots = [_grader_02_snapshot(opt, params)]
        for grads in steps:
            for p, g, s in zip(params, grads, shapes):
                p.grad = None if g is None else torch.tensor(g, dtype=torch.float16).reshape(s)
            opt.step()
            snapshots.append(_grader_02_snapshot(opt, params))
        runs.append(snapshots)
    return runs
"""
TOLERANCE = 2.0 ** -20     # relative to the magnitudes that enter a result: about 8 float32 ulps
FLOOR = 2.0 ** -140        # absolute, for results in the float32 subnormal range


def _settings(kw: dict) -> dict:
    full = {"lr": kw["lr"], "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False}
    full.update(kw)
    return full


def _torch_sgd_step(master, buf, grad16, kw: dict, first: bool):
    """torch.optim.SGD's update of an FP32 parameter (and buffer) whose gradient is grad16.float()."""
    param, buffers = master.clone(), [None if first or buf is None else buf.clone()]
    s = _settings(kw)
    torch_sgd([param], [grad16.float()], buffers, foreach=False, weight_decay=s["weight_decay"],
              momentum=s["momentum"], lr=s["lr"], dampening=s["dampening"], nesterov=s["nesterov"],
              maximize=False)
    return param, buffers[0]


def _sgd_variant(master, buf, grad16, kw: dict, first: bool, mistake: str):
    """The same step with one plausible mistake, to name the likely cause of a mismatch."""
    s = _settings(kw)
    lr, mu, tau, wd = s["lr"], s["momentum"], s["dampening"], s["weight_decay"]
    g = grad16.float()
    decayed = master.half().float() if mistake == "decay from fp16" else master
    d = g if mistake == "no decay" else g + wd * decayed
    new_buf = None
    if mu != 0:
        if first:
            new_buf = (1 - tau) * d if mistake == "dampened first step" else d.clone()
        else:
            new_buf = mu * buf + (1 - tau) * d
        if mistake == "fp16 buffer":
            new_buf = new_buf.half().float()
        d = d + mu * new_buf if s["nesterov"] and mistake != "no nesterov" else new_buf
    new_master = master + lr * d if mistake == "wrong sign" else master - lr * d
    if mistake == "fp16 update":
        new_master = (master.half() - (lr * d).half()).float()
    if mistake == "fp16 product":
        new_master = master - (lr * d.half()).float()
    return new_master, new_buf


MISTAKES = {
    "fp16 update": "the master was updated in FP16 (or rounded through it): keep master[i] FP32 and "
                   "subtract lr * step in FP32; only the copy into params[i] is FP16",
    "fp16 product": "lr * grad was computed in FP16, before converting: the product rounds (or "
                    "underflows) there; convert the gradient to FP32 first",
    "fp16 buffer": "the momentum buffer was rounded to FP16: build it from the FP32 gradient and keep "
                   "it FP32",
    "decay from fp16": "weight decay used the FP16 param: torch.optim.SGD's theta is the master, so "
                       "the decay term is weight_decay * master[i]",
    "no decay": "weight_decay was not applied: the gradient becomes g + weight_decay * master",
    "dampened first step": "on a parameter's first step the buffer is the gradient itself: "
                           "dampening only applies from the second step (t > 1)",
    "no nesterov": "with nesterov=True the step is g + momentum * buffer, not the buffer",
    "wrong sign": "the step has the wrong sign: master = master - lr * step",
}


def _terms(master, buf, grad16, kw: dict, first: bool):
    """The magnitudes that enter the buffer and the master this step, for their tolerances."""
    s = _settings(kw)
    d = grad16.float().double().abs() + s["weight_decay"] * master.double().abs()
    b = None
    if s["momentum"] != 0:
        b = d if first else s["momentum"] * buf.double().abs() + abs(1 - s["dampening"]) * d
        d = d + s["momentum"] * b if s["nesterov"] else b
    return master.double().abs() + s["lr"] * d, b


def _close(got, want, terms) -> torch.Tensor:
    """Where got and want differ by more than the tolerance (a bool tensor)."""
    return (got.double() - want.double()).abs() > TOLERANCE * terms + FLOOR


def _sgd_case_text(values, shapes, kw, steps, upto) -> str:
    params = ", ".join(f"float16 {list(s)} {render(v, max_items=3)}" for v, s in zip(values, shapes))
    args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    shown = [[None if g is None else render(g, max_items=3) for g in grads] for grads in steps[:upto]]
    return (f"MasterWeightSGD([{params}], {args}); .grad per param at steps 1..{upto}: "
            + "; ".join("[" + ", ".join("None" if g is None else g for g in grads) + "]" for grads in shown))


def _is_f32(t, shape) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype == torch.float32 and list(t.shape) == list(shape)


def _kinds(items) -> list:
    """What each item is, for a message: 'float32 [2, 3]', 'None', or its type's name."""
    if not isinstance(items, list):
        return render(items)
    return [f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}" if isinstance(t, torch.Tensor)
            else "None" if t is None else type(t).__name__ for t in items]


def _check_structure(snapshot, shapes, momentum: float) -> tuple | None:
    """(cause, expected, got) when the optimizer's lists are not what the contract says, else None."""
    master, buffers, params, same = snapshot
    n = len(shapes)
    f32 = [f"float32 {list(s)}" for s in shapes]
    if not isinstance(master, list) or len(master) != n or not all(_is_f32(t, s) for t, s in zip(master, shapes)):
        return ("self.master is a list with one FP32 tensor per parameter, of its shape", f32, _kinds(master))
    if not isinstance(buffers, list) or len(buffers) != n or (
            momentum != 0 and not all(b is None or _is_f32(b, s) for b, s in zip(buffers, shapes))):
        return ("self.momentum_buffer is a list with, per parameter, None or an FP32 tensor of its shape: "
                "build the buffer from the FP32 gradient and keep it FP32",
                [f"None or float32 {list(s)}" for s in shapes], _kinds(buffers))
    if not same:
        return ("self.params must hold the very tensors the optimizer was given (list(params)), and step() "
                "writes into them instead of replacing them", "the model's own tensors", "other objects")
    if not all(isinstance(p, torch.Tensor) and p.dtype == torch.float16 for p in params):
        return ("the model's params stay FP16: copy the master into them in place",
                [f"float16 {list(s)}" for s in shapes], _kinds(params))
    return None


def _first_wrong(bad: torch.Tensor) -> int:
    return int(bad.reshape(-1).nonzero()[0])


def _diagnose(master, buf, grad16, kw, first, got_master, got_buf, what_differs) -> str:
    """The first mistake whose variant reproduces the learner's result, else a general cause."""
    for mistake, cause in MISTAKES.items():
        want_master, want_buf = _sgd_variant(master, buf, grad16, kw, first, mistake)
        terms, bterms = _terms(master, buf, grad16, kw, first)
        if what_differs == "buffer":
            if want_buf is not None and not bool(_close(got_buf, want_buf, bterms).any()):
                return cause
        elif not bool(_close(got_master, want_master, terms).any()):
            return cause
    return ("update master[i] (and momentum_buffer[i]) as torch.optim.SGD's algorithm does, with theta "
            "the FP32 master and g the FP16 grad converted to FP32")


def compare_sgd_run(case, snapshots, what: str, check_start: bool = False) -> None:
    """Each step against torch's update of the learner's own state before it. With check_start, the
    state after construction too (masters, and no buffers yet): one check owns that part."""
    values, shapes, kw, steps = case
    s = _settings(kw)
    if not isinstance(snapshots, list) or len(snapshots) != len(steps) + 1:
        raise CheckFailed(what, _sgd_case_text(values, shapes, kw, steps, len(steps)),
                          f"{len(steps) + 1} states", snapshots, "step() must run once per call")
    problem = _check_structure(snapshots[0], shapes, s["momentum"])
    initial = [torch.tensor(v, dtype=torch.float16).reshape(sh).float() for v, sh in zip(values, shapes)]
    case0 = _sgd_case_text(values, shapes, kw, steps, 0).split(";")[0] + ", before any step"
    if problem:
        cause, expected, got = problem
        raise CheckFailed(what, case0, expected, got, cause)
    master0, buffers0 = snapshots[0][0], snapshots[0][1]
    if check_start and not all(torch.equal(m, i) for m, i in zip(master0, initial)):
        raise CheckFailed(what + ": the masters start as FP32 copies of the params", case0,
                          [i.tolist() for i in initial], [m.tolist() for m in master0],
                          "master[i] = params[i] converted to FP32, exactly")
    if check_start and any(b is not None for b in buffers0):
        raise CheckFailed(what + ": no momentum buffer before the first step", case0, [None] * len(shapes),
                          [render(b) for b in buffers0], "start with momentum_buffer = [None] * len(params)")
    stepped = [False] * len(shapes)
    for k, grads in enumerate(steps, start=1):
        before, after = snapshots[k - 1], snapshots[k]
        case = _sgd_case_text(values, shapes, kw, steps, k)
        problem = _check_structure(after, shapes, s["momentum"])
        if problem:
            cause, expected, got = problem
            raise CheckFailed(f"{what} (after step {k})", case, expected, got, cause)
        for i, g in enumerate(grads):
            m_prev, b_prev = before[0][i], before[1][i]
            m_got, b_got, p_got = after[0][i], after[1][i], after[2][i]
            where = f"{what} (step {k}, parameter {i}"
            if g is None:
                if not torch.equal(m_got, m_prev) or (s["momentum"] != 0 and not _same_buffer(b_got, b_prev)):
                    raise CheckFailed(where + ", whose .grad is None)", case, "master and buffer unchanged",
                                      f"master {render(m_got.tolist())}, buffer {render(_plain(b_got))}",
                                      "skip a parameter whose .grad is None: its master and buffer stay as they are")
            else:
                first = not stepped[i]
                if s["momentum"] != 0 and not first and b_prev is None:
                    raise CheckFailed(where + ")", case, "the buffer from the previous step", None,
                                      "keep momentum_buffer[i] after a parameter's first step")
                grad16 = torch.tensor(g, dtype=torch.float16).reshape(shapes[i])
                want_m, want_b = _torch_sgd_step(m_prev, b_prev, grad16, kw, first)
                terms, bterms = _terms(m_prev, b_prev, grad16, kw, first)
                if want_b is not None:
                    if b_got is None:
                        raise CheckFailed(where + ": momentum buffer)", case, render(want_b.tolist()), None,
                                          "with momentum != 0, momentum_buffer[i] is set on the first step")
                    bad = _close(b_got, want_b, bterms)
                    if bool(bad.any()):
                        j = _first_wrong(bad)
                        case += _element_text(m_prev, b_prev, grad16, j)
                        raise CheckFailed(f"{where}: momentum buffer, element {j})", case,
                                          want_b.reshape(-1)[j].item(), b_got.reshape(-1)[j].item(),
                                          _diagnose(m_prev, b_prev, grad16, kw, first, m_got, b_got, "buffer"))
                bad = _close(m_got, want_m, terms)
                if bool(bad.any()):
                    j = _first_wrong(bad)
                    case += _element_text(m_prev, b_prev, grad16, j)
                    raise CheckFailed(f"{where}: master, element {j})", case, want_m.reshape(-1)[j].item(),
                                      m_got.reshape(-1)[j].item(),
                                      _diagnose(m_prev, b_prev, grad16, kw, first, m_got, b_got, "master"))
                stepped[i] = True
            if not torch.equal(p_got, m_got.half()):
                raise CheckFailed(f"{where}: the FP16 param)", case, render(m_got.half().tolist()),
                                  render(p_got.tolist()),
                                  "after each step, write the updated master, rounded to FP16, into params[i] "
                                  "in place (under torch.no_grad(): params[i].copy_(master[i]))")


def _element_text(master, buf, grad16, j: int) -> str:
    buffer = "None" if buf is None else repr(buf.reshape(-1)[j].item())
    return (f". Before this step, at that element: master {master.reshape(-1)[j].item()!r}, "
            f"buffer {buffer}, grad {grad16.reshape(-1)[j].item()!r}")


def _plain(t):
    return t.tolist() if isinstance(t, torch.Tensor) else t


def _same_buffer(a, b) -> bool:
    return (a is None and b is None) or (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                                         and torch.equal(a, b))


def check_sgd_runs(learner, cases: list[tuple], what: str, check_start: bool = False) -> None:
    learner.run(SGD_DRIVER)
    runs = learner.call("_grader_02_sgd_runs", cases)
    if not isinstance(runs, list) or len(runs) != len(cases):
        raise CheckFailed(what, f"{len(cases)} runs", f"{len(cases)} runs", runs, "do not change the driver")
    for case, snapshots in zip(cases, runs):
        compare_sgd_run(case, snapshots, what, check_start)


# -- drawn runs ------------------------------------------------------------------------------

WEIGHTS16 = st.floats(min_value=-8.0, max_value=8.0, width=16)
GRADS16 = st.one_of(st.floats(min_value=-4.0, max_value=4.0, width=16),
                    st.floats(min_value=-2.0 ** -10, max_value=2.0 ** -10, width=16))   # small, subnormal too
SHAPES = st.sampled_from([[1], [3], [2, 3], [5]])


@st.composite
def sgd_runs(draw_, settings, n_steps=st.integers(1, 6), grad_present=st.just(True)):
    """(values, shapes, settings, steps): one to three FP16 params and a run of FP16 gradients."""
    shapes = draw_(st.lists(SHAPES, min_size=1, max_size=3))
    sizes = [math.prod(s) for s in shapes]
    values = [draw_(st.lists(WEIGHTS16, min_size=n, max_size=n)) for n in sizes]
    steps = []
    for _ in range(draw_(n_steps)):
        steps.append([draw_(st.lists(GRADS16, min_size=n, max_size=n)) if draw_(grad_present) else None
                      for n in sizes])
    return values, shapes, draw_(settings), steps


LRS = st.sampled_from([2.0 ** -10, 1e-3, 0.01, 0.1, 0.5])
PLAIN = st.fixed_dictionaries({"lr": LRS})
MOMENTUM = st.fixed_dictionaries({"lr": LRS, "momentum": st.sampled_from([0.5, 0.9, 0.99, 0.3])})
DAMPENED = st.fixed_dictionaries({"lr": LRS, "momentum": st.sampled_from([0.9, 0.5]),
                                  "dampening": st.sampled_from([0.1, 0.5, 0.9])})
DECAYED = st.fixed_dictionaries({"lr": st.sampled_from([0.1, 0.25, 0.5]),
                                 "momentum": st.sampled_from([0.0, 0.9]),
                                 "weight_decay": st.sampled_from([0.1, 0.25, 0.01])})
NESTEROV = st.fixed_dictionaries({"lr": LRS, "momentum": st.sampled_from([0.9, 0.5]), "nesterov": st.just(True),
                                  "weight_decay": st.sampled_from([0.0, 0.01])})
ANY = st.one_of(
    st.fixed_dictionaries({"lr": LRS, "momentum": st.sampled_from([0.0, 0.5, 0.9]),
                           "dampening": st.sampled_from([0.0, 0.1]),
                           "weight_decay": st.sampled_from([0.0, 1e-4, 0.1])}),
    NESTEROV)


def _small_grads(case):
    """The same run with gradients scaled far below the weights: the swamping regime."""
    values, shapes, kw, steps = case
    tiny = [[None if g is None else torch.tensor(g, dtype=torch.float16).mul(2.0 ** -6).tolist()
             for g in grads] for grads in steps]
    return values, shapes, kw, tiny


@exercise(SGD, points=1)
def test_masters_start_as_fp32_copies_and_params_are_refreshed_in_place(learner):
    """master[i] starts as params[i] in FP32, the buffers as None, and after each step every param (the
    same tensor object) holds its master rounded to FP16."""
    cases = [([[1.0, -2.5, 3.0], [0.5]], [[3], [1]], {"lr": 0.125},
              [[[0.5, 1.0, -2.0], [4.0]], [[0.25, 0.25, 0.25], [-1.0]]]),
             ([[1000.0, 0.1, -7.0, 2.0, 0.0, 1.0]], [[2, 3]], {"lr": 0.01, "momentum": 0.9},
              [[[1.0, -1.0, 0.5, 0.25, 2.0, -3.0]]] * 3)]
    cases = [([torch.tensor(v, dtype=torch.float16).tolist() for v in values], shapes, kw, steps)
             for values, shapes, kw, steps in cases]
    check_sgd_runs(learner, cases, "MasterWeightSGD keeps FP32 masters and refreshes its FP16 params in place",
                   check_start=True)


@exercise(SGD, points=2)
def test_plain_sgd_on_the_masters_keeps_updates_fp16_would_swamp(learner, seed):
    """With momentum 0, every step updates the FP32 masters as torch.optim.SGD does, including updates
    below half an FP16 ulp of the weight."""
    drawn = draw(sgd_runs(PLAIN), n=15, seed=seed, key="02.sgd.plain")
    cases = drawn + [_small_grads(c) for c in drawn]
    check_sgd_runs(learner, cases, "plain SGD steps on the FP32 masters match torch.optim.SGD")


@exercise(SGD, points=2)
def test_momentum_buffers_and_masters_follow_torch_sgd(learner, seed):
    """With momentum, the FP32 buffer (the gradient itself on the first step) and the master follow
    torch.optim.SGD after every step."""
    drawn = draw(sgd_runs(MOMENTUM), n=15, seed=seed, key="02.sgd.momentum")
    cases = drawn + [_small_grads(c) for c in drawn]
    check_sgd_runs(learner, cases, "momentum buffers and masters follow torch.optim.SGD")


@exercise(SGD, points=1)
def test_dampening_applies_from_each_parameters_second_step(learner, seed):
    """With dampening, the buffer starts as the undampened gradient and is dampened from the second step."""
    cases = draw(sgd_runs(DAMPENED, n_steps=st.integers(2, 5)), n=12, seed=seed, key="02.sgd.dampening")
    check_sgd_runs(learner, cases, "dampened momentum follows torch.optim.SGD")


@exercise(SGD, points=1)
def test_weight_decay_reads_the_fp32_master(learner, seed):
    """Weight decay adds weight_decay * master (the FP32 master, not the FP16 param) to the gradient."""
    cases = [_small_grads(c) for c in draw(sgd_runs(DECAYED, n_steps=st.integers(3, 6)), n=12, seed=seed,
                                           key="02.sgd.decay")]
    check_sgd_runs(learner, cases, "weight decay follows torch.optim.SGD, from the FP32 master")


@exercise(SGD, points=1)
def test_nesterov_steps_match_torch_sgd(learner, seed):
    """With nesterov=True the step is gradient + momentum * buffer, as torch.optim.SGD computes it."""
    cases = draw(sgd_runs(NESTEROV, n_steps=st.integers(2, 5)), n=12, seed=seed, key="02.sgd.nesterov")
    check_sgd_runs(learner, cases, "Nesterov momentum follows torch.optim.SGD")


@exercise(SGD, points=1)
def test_parameters_without_a_gradient_are_skipped(learner, seed):
    """A parameter whose .grad is None keeps its master and buffer; its next step with a gradient is its first."""
    runs = sgd_runs(MOMENTUM, n_steps=st.integers(3, 6), grad_present=st.booleans())
    cases = draw(runs, n=12, seed=seed, key="02.sgd.skip")
    cases.append(([[3.0], [-1.0]], [[1], [1]], {"lr": 0.25, "momentum": 0.9, "dampening": 0.1},
                  [[[1.0], None], [None, [2.0]], [[0.5], [0.5]]]))
    check_sgd_runs(learner, cases, "parameters without a gradient are skipped, as torch.optim.SGD skips them")


@exercise(SGD, points=1)
def test_drawn_settings_match_torch_sgd_step_for_step(learner, seed):
    """Drawn learning rates, momentum, dampening, weight decay, Nesterov and missing gradients: every step
    matches torch.optim.SGD."""
    runs = sgd_runs(ANY, grad_present=st.sampled_from([True, True, True, False]))
    cases = draw(runs, n=20, seed=seed, key="02.sgd.any")
    check_sgd_runs(learner, cases, "MasterWeightSGD matches torch.optim.SGD step for step")
