"""Self-checks for lesson 05 (automatic mixed precision): `amp_train_window`.

Each case builds a tiny float32 model on the CPU, so the expected behaviour is
bfloat16 autocast with `torch.amp.GradScaler("cpu")`, a real `torch.optim.SGD`
and a real `LambdaLR` warm-up. Expected values come from properties of the
contract (the mean loss before the step, one window of two halves against one
window of the whole batch, the size of a clipped update, an unchanged model and
schedule after an overflow), not from a copy of the answer.
"""

from __future__ import annotations

import copy
import math
import warnings

import torch
import torch.nn.functional as F

from grader.selfcheck.core import NOT_IMPLEMENTED, SelfCheck, _Stop

LR, WARMUP = 0.1, 4

ORDER_ERRORS = ("unscale_() has already been called", "step() has already been called",
                "after step()")


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _batch(seed: int, rows: int = 8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 4, generator=g), torch.randn(rows, 2, generator=g)


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _training(model, init_scale=2.0**16):
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / WARMUP))
    return opt, sched, torch.amp.GradScaler("cpu", init_scale=init_scale)


def _window(sc: SelfCheck, fn, model, micro_batches, opt, sched, scaler, max_grad_norm=None):
    """Call the learner's window; a scaler complaining about the call order gets its own row."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the scheduler's order warning has a row of its own
            return sc.call(fn, model, micro_batches, opt, sched, scaler, max_grad_norm)
    except _Stop:
        if sc.stopped and sc.stopped != NOT_IMPLEMENTED and any(t in sc.stopped for t in ORDER_ERRORS):
            message = sc.stopped.split(" (line")[0]
            sc.stopped = None
            sc.row("unscale_, step and update run once per window", "no error", message, False,
                   cause="GradScaler allows one unscale_ and one step per update(): accumulate "
                         "every micro-batch first, then unscale_, clip, step and update once.")
        raise


def _pair(sc: SelfCheck, got, first: bool = True) -> tuple:
    ok = type(got) is tuple and len(got) == 2 and type(got[0]) is float and type(got[1]) is bool
    if first or not ok:
            sc.row("returns (loss: float, skipped: bool)", "(float, bool)",
               tuple(type(v).__name__ for v in got) if isinstance(got, tuple) else type(got).__name__,
               ok, cause="return a tuple (loss, skipped): loss.item() values averaged in Python, "
                         "and a bool (wrap a tensor or numpy value: bool(...)).")
    if not ok:
        raise _Stop
    return got


def check_amp_train_window(amp_train_window) -> None:
    with SelfCheck("amp_train_window") as sc:
        # 1. one clean window of two micro-batches: returned values, autocast, the step
        x, y = _batch(1)
        halves = [(x[:4], y[:4]), (x[4:], y[4:])]
        model = _model()
        before = copy.deepcopy(model)
        seen = []
        model[0].register_forward_hook(lambda m, i, out: seen.append(str(out.dtype)))
        opt, sched, scaler = _training(model)
        loss, skipped = _pair(sc, _window(sc, amp_train_window, model, halves, opt, sched, scaler))
        dtype_ok = sc.compare("the forward pass ran under bfloat16 autocast", "torch.bfloat16",
                              seen[0] if seen else "(no forward pass seen)",
                              cause="wrap the forward pass and the loss in torch.autocast("
                                    "device_type, dtype=torch.bfloat16); on a CPU model "
                                    "device_type is 'cpu'.")
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            expected = sum(F.mse_loss(before(a), b).item() for a, b in halves) / 2
        sc.close("returns the mean of the micro-batch losses", expected, loss, rel=1e-6,
                 cause="average the losses of the micro-batches, each read before dividing by n "
                       "and before scaling.")
        sc.compare("a clean window is not skipped", False, skipped,
                   cause="skipped is True only when the scaler skipped optimizer.step().")

        # 2. two halves accumulate to one step on the mean loss of the whole batch
        whole = _model()
        opt_w, sched_w, scaler_w = _training(whole)
        _window(sc, amp_train_window, whole, [(x, y)], opt_w, sched_w, scaler_w)
        step_halves, step_whole = _flat(model) - _flat(before), _flat(whole) - _flat(before)
        error = float((step_halves - step_whole).norm() / step_whole.norm())
        sc.within("two halves give the step of the whole batch (relative error)", error, 1e-2,
                  cause="this follows from the autocast row above: fix that first." if not dtype_ok
                  else "zero the gradients once per window and backpropagate "
                       "scaler.scale(loss / n): the gradients must add up to those of the mean loss.")
        sc.compare("the schedule advanced one step", LR * 2 / WARMUP, sched.get_last_lr()[0],
                   cause="call scheduler.step() once after a window whose optimizer step happened.")
        sc.compare("the scale is unchanged after one clean window", 65536.0, scaler.get_scale(),
                   cause="call scaler.update() once per window (growth_interval is 2000 here).")

        # 3. an inf in the second micro-batch: no step, the scale backs off, the schedule waits
        snapshot, lr = _flat(model), sched.get_last_lr()[0]
        bad = [_batch(2, rows=4), _batch(3, rows=4)]
        bad[1][1][0, 0] = math.inf
        loss, skipped = _pair(sc, _window(sc, amp_train_window, model, bad, opt, sched, scaler),
                              first=False)
        sc.compare("an inf in one micro-batch skips the window", True, skipped,
                   cause="the scaler skipped optimizer.step(): report it. Its scale backs off "
                         "exactly on a skipped step.")
        unchanged = bool(torch.equal(_flat(model), snapshot))
        sc.row("... and leaves the parameters unchanged", True, unchanged, unchanged,
               cause="step with scaler.step(optimizer), which skips optimizer.step() on inf/NaN "
                     "gradients; an optimizer.step() of your own writes NaN into the weights.")
        sc.compare("... and halves the scale", 32768.0, scaler.get_scale(),
                   cause="scaler.update() runs once per window, skipped windows included.")
        sc.compare("... and does not advance the schedule", lr, sched.get_last_lr()[0],
                   cause="the schedule counts optimizer steps: no scheduler.step() after a "
                         "skipped window.")
        sc.compare("... and returns an inf loss", "inf", str(loss),
                   cause="return the mean micro-batch loss even when it is not finite.")

        # 4. clipping acts once, on the unscaled, accumulated gradients
        model = _model(seed=4)
        start = _flat(model)
        opt, sched, scaler = _training(model)
        _window(sc, amp_train_window, model, [_batch(5, rows=4), _batch(6, rows=4)], opt, sched,
                scaler, 1e-2)
        step_norm = float((_flat(model) - start).norm())
        sc.close("with max_grad_norm=1e-2 the update has norm lr * 1e-2", LR / WARMUP * 1e-2,
                 step_norm, rel=1e-3,
                 cause="call scaler.unscale_(optimizer) once, after the last micro-batch, then "
                       "clip_grad_norm_(model.parameters(), max_grad_norm); clipping the scaled "
                       "gradients gives an update 65536x too small, no clipping one too big.")
