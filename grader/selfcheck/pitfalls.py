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
