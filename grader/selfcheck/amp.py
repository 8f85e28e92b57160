"""Self-checks for lesson 05 (automatic mixed precision): `train_step`.

Each case builds a tiny float32 model on the CPU, so the expected behaviour is
bfloat16 autocast with `torch.amp.GradScaler("cpu")`. Expected values come
from properties (the loss before the step, the size of a clipped update, an
unchanged model after an overflow), not from a copy of the answer.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from grader.selfcheck.core import NOT_IMPLEMENTED, SelfCheck, _Stop

LR = 0.1


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _batch(seed: int = 1, inf: bool = False):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(6, 4, generator=g), torch.randn(6, 2, generator=g)
    if inf:
        y[0, 0] = float("inf")
    return x, y


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _reference_sgd(model, batches) -> torch.Tensor:
    """Plain bf16-autocast SGD without a scaler: scaling by a power of two changes nothing."""
    model = copy.deepcopy(model)
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.mse_loss(model(x), y)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= LR * p.grad
    return _flat(model)


def _step(sc: SelfCheck, train_step, *args):
    """Call the learner's step; a scaler complaining about update() gets its own row."""
    try:
        return sc.call(train_step, *args)
    except _Stop:
        if sc.stopped and sc.stopped != NOT_IMPLEMENTED and (
                "update()" in sc.stopped or "after step()" in sc.stopped):
            message = sc.stopped.split(" (line")[0]
            sc.stopped = None
            sc.row("scaler.update() runs once per call", "no error on the 2nd call", message, False,
                   cause="GradScaler refuses a second step()/unscale_() until update() has run; "
                         "end every train_step with scaler.update().")
        raise


def check_train_step(train_step) -> None:
    with SelfCheck("train_step") as sc:
        # 1. one clean step: the returned loss, autocast, the update itself
        model = _model()
        before = copy.deepcopy(model)
        seen = []
        model[0].register_forward_hook(lambda m, i, out: seen.append(str(out.dtype)))
        batch = _batch()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            expected_loss = float(F.mse_loss(before(batch[0]), batch[1]))
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        # a small scale, so that gradients left over from the 1st call would show in the 2nd
        scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=2)
        loss = _step(sc, train_step, model, batch, opt, scaler)
        sc.compare("returns a Python float", "float", type(loss).__name__,
                   cause="return float(loss) (or loss.item()), not the tensor.")
        dtype_ok = sc.compare("the forward pass ran under bfloat16 autocast", "torch.bfloat16",
                              seen[0] if seen else "(no forward pass seen)",
                              cause="wrap the forward pass and the loss in torch.autocast("
                                    "device_type, dtype=torch.bfloat16); on a CPU model "
                                    "device_type is 'cpu'.")
        follows = ("this follows from the autocast row above: the expected values assume a "
                   "bfloat16 forward pass, so fix that first.")
        sc.close("returns the unscaled MSE loss", expected_loss, loss, rel=1e-6,
                 cause=follows if not dtype_ok else
                 "return the loss itself, before scaler.scale() multiplies it by the scale "
                 "(4 here), computed as mse_loss(model(x), y) under autocast.")
        diff = float((_flat(model) - _reference_sgd(before, [batch])).abs().max())
        sc.within("one SGD step on the true (unscaled) gradients (max |error|)", diff, 1e-6,
                  cause=follows if not dtype_ok else
                  "step with scaler.step(optimizer) so the gradients are unscaled first; a plain "
                  "optimizer.step() uses gradients 4x too big.")

        # 2. a second call must not see the first call's gradients
        batch2 = _batch(seed=2)
        _step(sc, train_step, model, batch2, opt, scaler)
        diff = float((_flat(model) - _reference_sgd(before, [batch, batch2])).abs().max())
        sc.within("a 2nd call starts from fresh gradients (max |error|)", diff, 1e-6,
                  cause=follows if not dtype_ok else
                  "call optimizer.zero_grad(set_to_none=True) at the start; otherwise backward() "
                  "adds to the previous step's gradients.")
        sc.compare("scale doubles after growth_interval=2 clean steps", 8.0, scaler.get_scale(),
                   cause="call scaler.update() once per call, after scaler.step(optimizer).")

        # 3. an overflowing batch: no step, the scale backs off
        snapshot = _flat(model)
        bad = _step(sc, train_step, model, _batch(seed=3, inf=True), opt, scaler)
        unchanged = bool(torch.equal(_flat(model), snapshot))
        sc.row("an inf loss leaves the parameters unchanged", True, unchanged, unchanged,
               cause="use scaler.step(optimizer): it skips optimizer.step() when a gradient is "
                     "inf/NaN; calling optimizer.step() yourself writes NaN into the weights.")
        sc.compare("... and the scale halves", 4.0, scaler.get_scale(),
                   cause="scaler.update() must run on every call, skipped steps included.")
        sc.compare("... and the returned loss is inf", "inf", str(bad),
                   cause="return float(loss) even when it is not finite.")

        # 4. clipping acts on the unscaled gradients
        model = _model(seed=4)
        start = _flat(model)
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        _step(sc, train_step, model, _batch(seed=5), opt, torch.amp.GradScaler("cpu"), 1e-3)
        step_norm = float((_flat(model) - start).norm())
        sc.close("with max_grad_norm=1e-3 the update has norm lr * 1e-3", LR * 1e-3, step_norm,
                 rel=1e-3, cause="call scaler.unscale_(optimizer) before clip_grad_norm_(model."
                                 "parameters(), max_grad_norm); clipping the scaled gradients gives "
                                 "an update 65536x too small, and skipping the clip gives one too big.")
