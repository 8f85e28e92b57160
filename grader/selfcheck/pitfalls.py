"""Self-checks for lesson 02, half-precision pitfalls."""

from __future__ import annotations

import torch

from grader.selfcheck.core import SelfCheck

FP16_UPDATE = ("the update was done in FP16 (or rounded through it): convert the gradient with "
               "grad.float() and subtract lr * grad from the FP32 master, then make the FP16 copy")


def _is_tensor(x) -> bool:
    return isinstance(x, torch.Tensor)


def _values(t) -> list:
    return t.tolist() if _is_tensor(t) else t


def check_master_weight_step(master_weight_step) -> None:
    with SelfCheck("master_weight_step") as sc:
        # Updates of about 1e-4 on weights of 1.0: below half an FP16 ulp (2^-11 ~ 4.9e-4).
        master = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float32)
        grad = torch.tensor([0.25, -0.5, 0.125], dtype=torch.float16)
        lr = 2.0 ** -10
        master_before, grad_before = master.clone(), grad.clone()
        out = sc.call(master_weight_step, master, grad, lr)
        ok = type(out) is tuple and len(out) == 2 and all(_is_tensor(t) for t in out)
        shown = (f"{type(out).__name__} of ({', '.join(type(t).__name__ for t in out)})"
                 if isinstance(out, (tuple, list)) else out)
        sc.row("returns a tuple of two tensors", "tuple of (Tensor, Tensor)", shown, ok,
               cause="return new_master, model_copy  (a tuple, in that order)")
        if not ok:
            return
        new_master, copy = out
        sc.compare("the master stays FP32", "torch.float32", str(new_master.dtype),
                   cause="keep the master in float32; only the copy is float16")
        sc.compare("the model copy is FP16", "torch.float16", str(copy.dtype),
                   cause="make the copy with new_master.half() (or .to(torch.float16))")
        sc.compare("shapes are kept", [[3], [3]], [list(new_master.shape), list(copy.shape)],
                   cause="return tensors of the same shape as master")
        expected = [1.0 - 0.25 * lr, 1.0 + 0.5 * lr, -1.0 - 0.125 * lr]
        swamped = [1.0, 1.0, -1.0]
        got = _values(new_master)
        sc.compare("FP32 master = master - lr * grad (updates ~1e-4 survive)", expected, got,
                   cause=FP16_UPDATE if got == swamped else
                   "compute master - lr * grad.float(): subtract, do not add; use the lr you are given")
        sc.compare("the FP16 copy is the new master rounded to FP16",
                   _values(torch.tensor(expected, dtype=torch.float32).half()), _values(copy),
                   cause="return new_master.half(), made from the updated master")
        sc.compare("grad is not modified", _values(grad_before), _values(grad),
                   cause="do not assign into grad or call in-place methods on it (mul_, ...)")
        sc.compare("master is not modified (a new tensor comes back)", _values(master_before),
                   _values(master),
                   cause="master - lr * g builds a new tensor; master -= ... or sub_ changes the input")
        sc.compare("the new master is a new tensor", True, new_master is not master,
                   cause="return a new tensor, not the input master")

        # A product that underflows in FP16 but not in FP32: lr * grad = 2^-26 < 2^-24.
        master = torch.tensor([2.0 ** -10], dtype=torch.float32)
        grad = torch.tensor([2.0 ** -14], dtype=torch.float16)
        out = sc.call(master_weight_step, master, grad, 2.0 ** -12)
        got = _values(out[0]) if isinstance(out, tuple) and out and _is_tensor(out[0]) else out
        sc.compare("lr * grad = 2^-26 is not flushed to zero", [2.0 ** -10 - 2.0 ** -26], got,
                   cause="lr * grad was computed in FP16, where 2^-26 underflows to 0; multiply "
                         "grad.float() by lr instead")


# -- MasterWeightSGD ------------------------------------------------------------------------
# Every number below is exact in float32 (powers of two, short mantissas), so the expected
# values hold whatever order or fusion of operations a correct optimizer uses.

def _half_leaves(values: list[float]) -> list[torch.Tensor]:
    return [torch.tensor(v, dtype=torch.float16).requires_grad_() for v in values]


def _grads(params: list[torch.Tensor], grads: list) -> None:
    for p, g in zip(params, grads):
        p.grad = None if g is None else torch.tensor(g, dtype=torch.float16)


def _lists(tensors) -> list:
    if not isinstance(tensors, (list, tuple)):
        return [f"not a list: {type(tensors).__name__}"]
    return [t.tolist() if _is_tensor(t) else t for t in tensors]


def _dtypes(tensors) -> list:
    if not isinstance(tensors, (list, tuple)):
        return [f"not a list: {type(tensors).__name__}"]
    return [str(t.dtype) if _is_tensor(t) else repr(t) for t in tensors]


def _scalars(tensors) -> list:
    """One-element tensors as floats, so that a table row stays readable."""
    if not isinstance(tensors, (list, tuple)):
        return _lists(tensors)
    return [t.item() if _is_tensor(t) and t.numel() == 1 else _values(t) for t in tensors]


def _run(sc, MasterWeightSGD, values, steps, **settings):
    """Construct on one-element FP16 leaves, apply each step's grads, and collect the master and
    buffer values after each step: one float (or None) per parameter."""
    params = _half_leaves([[v] for v in values])
    opt = sc.call(MasterWeightSGD, params, **settings)
    masters, buffers = [], []
    for grads in steps:
        _grads(params, [None if g is None else [g] for g in grads])
        sc.call(opt.step)
        masters.append(_scalars(opt.master))
        buffers.append(_scalars(opt.momentum_buffer))
    if len(values) == 1:
        masters, buffers = [m[0] for m in masters], [b[0] for b in buffers]
    return opt, params, masters, buffers


def check_master_weight_sgd(MasterWeightSGD) -> None:
    with SelfCheck("MasterWeightSGD") as sc:
        params = _half_leaves([[1.0, -1.0, 2.0]])
        opt = sc.call(MasterWeightSGD, params, lr=2.0 ** -10)
        sc.compare("master starts as an FP32 copy of the params", ["torch.float32"], _dtypes(opt.master),
                   cause="self.master = [p.detach().float() for p in params]: FP32 tensors, new memory")
        sc.compare("master values equal the params", [[1.0, -1.0, 2.0]], _lists(opt.master),
                   cause="copy the values: FP16 -> FP32 is exact")
        sc.compare("momentum_buffer starts as [None]", [None], _lists(opt.momentum_buffer),
                   cause="one None per parameter until its first step with momentum")
        _grads(params, [[0.25, 0.5, -0.125]])
        sc.call(opt.step)
        sc.compare("plain SGD: the master gets updates FP16 would swamp",
                   [[1 - 2.0 ** -12, -1 - 2.0 ** -11, 2 + 2.0 ** -13]], _lists(opt.master),
                   cause="master = master - lr * grad, in FP32 (convert the FP16 grad first)")
        sc.compare("the FP16 params are the masters rounded (here: unchanged)", [[1.0, -1.0, 2.0]],
                   [params[0].tolist()], cause="write master.half() into the param in place")
        sc.compare("the optimizer keeps the model's own tensors", True,
                   isinstance(opt.params, list) and len(opt.params) == 1 and opt.params[0] is params[0],
                   cause="keep the tensors you were given (a new list of the same objects), so the model sees the updates")

        opt, params, masters, buffers = _run(sc, MasterWeightSGD, [1.0], [[0.25], [0.5]],
                                             lr=0.5, momentum=0.5, dampening=0.5)
        sc.compare("momentum 0.5, dampening 0.5: buffer after steps 1, 2", [0.25, 0.375], buffers,
                   cause="first step: buffer = gradient, no dampening; then "
                         "buffer = momentum * buffer + (1 - dampening) * gradient")
        sc.compare("... and the master", [0.875, 0.6875], masters,
                   cause="master = master - lr * buffer")
        sc.compare("... and the FP16 param after them", 0.6875, params[0].item(),
                   cause="copy the master into the param in place after each step (param.copy_(master))")
        sc.compare("the buffer is FP32", ["torch.float32"], _dtypes(opt.momentum_buffer),
                   cause="keep the buffer in FP32: built from the FP32 gradient")

        _, _, masters, _ = _run(sc, MasterWeightSGD, [1.0], [[2.0 ** -8], [0.0]],
                                lr=2.0 ** -4, weight_decay=0.25)
        sc.compare("weight decay reads the FP32 master, not the FP16 param",
                   [0.984130859375, 0.968753814697265625], masters,
                   cause="gradient + weight_decay * master: after step 1 the master (0.98413...) is "
                         "not an FP16 number, and its FP16 copy (0.984375) gives 0.96875")

        _, _, masters, buffers = _run(sc, MasterWeightSGD, [0.0], [[0.5], [0.25]],
                                      lr=1.0, momentum=0.5, nesterov=True)
        sc.compare("Nesterov: the master after steps 1, 2", [-0.75, -1.25], masters,
                   cause="with nesterov the step is gradient + momentum * buffer, not the buffer")

        _, _, masters, buffers = _run(sc, MasterWeightSGD, [1.0, 2.0], [[0.5, None], [0.5, 1.0]],
                                      lr=0.5, momentum=0.5, dampening=0.5)
        sc.compare("two params, the 2nd without .grad at step 1: buffers",
                   [[0.5, None], [0.5, 1.0]], buffers,
                   cause="skip params whose .grad is None; their first step with a gradient sets "
                         "buffer = gradient")
        sc.compare("... and masters: the skipped one waits", [[0.75, 2.0], [0.5, 1.5]], masters,
                   cause="a skipped parameter's master does not move")
