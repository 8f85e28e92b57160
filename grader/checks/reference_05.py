"""The trusted half of lesson 05's checks: the reference accumulation window, its
usual mistakes, the data the checks draw, and the driver shipped to the worker.

The reference is the loop of PyTorch's AMP examples ("gradient accumulation",
"gradient clipping") with a real `torch.amp.GradScaler("cpu")`, bfloat16 autocast,
and a scheduler stepped only after a real optimizer step. The optimizer and the
scheduler are small stand-ins for `torch.optim.SGD` and `LambdaLR` (building the
first torch.optim optimizer imports torch._dynamo, over a second per worker);
tests/test_05_amp_training_claims.py shows that they step exactly like the real ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IN, HIDDEN, OUT = 8, 16, 4
LOSS_REL, PARAM_ABS = 1e-5, 1e-6  # the tolerances the exercise states

STAND_INS = '''
class PlainSGD:
    """torch.optim.SGD without momentum: the interface GradScaler and the schedule use."""

    def __init__(self, params, lr):
        self.param_groups = [{"params": list(params), "lr": lr}]
        self.steps = 0

    def zero_grad(self, set_to_none=True):
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def step(self):
        self.steps += 1
        lr = self.param_groups[0]["lr"]
        with _mp05_torch.no_grad():
            for p in self.param_groups[0]["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-lr)


class WarmupLR:
    """LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / warmup)): the same arithmetic."""

    def __init__(self, optimizer, warmup):
        self.optimizer, self.warmup = optimizer, warmup
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def step(self):
        self.last_epoch += 1
        factor = min(1.0, (self.last_epoch + 1) / self.warmup)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        return list(self._last_lr)


def _mp05_build(params, setup):
    nn = _mp05_torch.nn
    model = nn.Sequential(nn.Linear(%(IN)d, %(HIDDEN)d), nn.ReLU(), nn.Linear(%(HIDDEN)d, %(OUT)d))
    with _mp05_torch.no_grad():
        for p, value in zip(model.parameters(), params):
            p.copy_(value)
    opt = PlainSGD(model.parameters(), lr=setup["lr"])
    sched = WarmupLR(opt, setup["warmup"])
    scaler = _mp05_torch.amp.GradScaler("cpu", init_scale=setup["init_scale"],
                                        growth_interval=setup["growth_interval"])
    return model, opt, sched, scaler


def _mp05_record(returned, model, sched, scaler):
    return {"returned": returned, "scale": float(scaler.get_scale()),
            "lr": float(sched.get_last_lr()[0]),
            "params": [p.detach().clone() for p in model.parameters()]}
''' % {"IN": IN, "HIDDEN": HIDDEN, "OUT": OUT}

DRIVER = "import torch as _mp05_torch\n" + STAND_INS + '''

def _mp05_run(params, setup, windows, max_norm):
    """Call amp_train_window on each window; a record of plain data after each."""
    model, opt, sched, scaler = _mp05_build(params, setup)
    records = []
    for window in windows:
        returned = amp_train_window(model, [tuple(mb) for mb in window], opt, sched, scaler, max_norm)
        records.append(_mp05_record(returned, model, sched, scaler))
    return records
'''

_namespace: dict = {"_mp05_torch": torch}
exec(STAND_INS, _namespace)
_build, _record = _namespace["_mp05_build"], _namespace["_mp05_record"]


# -- the data ------------------------------------------------------------------------------

def windows_from(seed: int, batch: int, counts: list[int], inf_at: list[int],
                 inf_windows: int = 0, big_targets: bool = False):
    """Initial weights and windows from a drawn case. Windows 2, 4, ... up to `inf_windows`
    of them get an inf target in micro-batch `inf_at[i] % n`."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(HIDDEN, IN, generator=g) * 0.4, torch.randn(HIDDEN, generator=g) * 0.1,
              torch.randn(OUT, HIDDEN, generator=g) * 0.3, torch.randn(OUT, generator=g) * 0.1]
    target_scale = 8.0 if big_targets else 1.0
    windows = []
    for i, n in enumerate(counts):
        window = [(torch.randn(batch, IN, generator=g), torch.randn(batch, OUT, generator=g) * target_scale)
                  for _ in range(n)]
        if i % 2 == 1 and i // 2 < inf_windows:
            x, y = window[inf_at[i] % n]
            y[0, 0] = math.inf
        windows.append(window)
    return params, windows


# -- the reference window, and the usual mistakes ------------------------------------------

def _clip(model, max_norm, mistake):
    if max_norm is not None and mistake != "no_clip":
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def _step(model, opt, scaler, max_norm, mistake) -> bool:
    """unscale_, clip, scaler.step and update, once; True when the optimizer did not step."""
    if mistake == "clip_before_unscale":
        _clip(model, max_norm, mistake)
        scaler.unscale_(opt)
    else:
        scaler.unscale_(opt)
        _clip(model, max_norm, mistake)
    steps = opt.steps
    scaler.step(opt)
    scaler.update()
    return opt.steps == steps


def reference_window(model, window, opt, sched, scaler, max_norm, mistake=None):
    """One accumulation window (or a known mistake of it): returns (mean loss, skipped)."""
    n = len(window)
    if mistake not in ("zero_grad_each", "no_zero_grad"):
        opt.zero_grad(set_to_none=True)
    dtype = torch.float16 if mistake == "float16_on_cpu" else torch.bfloat16
    losses, skipped = [], False
    for x, y in window:
        if mistake == "zero_grad_each":
            opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype, enabled=mistake != "no_autocast"):
            loss = F.mse_loss(model(x), y)
        scaler.scale(loss if mistake == "sum_not_mean" else loss / n).backward()
        losses.append(loss.item())
        if mistake == "step_each":
            skipped = _step(model, opt, scaler, max_norm, mistake)
            if not skipped:
                sched.step()
    mean = sum(losses) / n
    if mistake != "step_each":
        skipped = _step(model, opt, scaler, max_norm, mistake)
        if mistake == "skip_from_loss":
            skipped = not math.isfinite(mean)
        if not skipped or mistake == "scheduler_on_skip":
            sched.step()
    return (losses[-1] if mistake == "last_loss" else mean), skipped


def reference_run(params, setup, windows, max_norm=None, mistake=None) -> list[dict]:
    """What the driver records, for the reference loop (or a mistake). Cached per case."""
    key = (id(params), id(windows), tuple(sorted(setup.items())), max_norm, mistake)
    if key not in _runs:
        if len(_runs) > 256:  # a batch reuses a few cases; slices of them come and go
            _runs.clear()
        model, opt, sched, scaler = _build(params, setup)
        records = []
        for window in windows:
            returned = reference_window(model, window, opt, sched, scaler, max_norm, mistake)
            records.append(_record(returned, model, sched, scaler))
        _runs[key] = (params, windows, records)  # keeps params and windows alive: ids stay unique
    return _runs[key][2]


_runs: dict = {}


# -- comparing runs --------------------------------------------------------------------------

def returned_pair(record: dict):
    value = record.get("returned")
    if type(value) is tuple and len(value) == 2:
        return value
    return None


def _params_close(expected: list, got) -> bool:
    return (type(got) is list and len(got) == len(expected)
            and all(isinstance(g, torch.Tensor) and g.shape == e.shape and g.dtype == e.dtype
                    and bool(torch.allclose(g, e, rtol=0.0, atol=PARAM_ABS, equal_nan=True))
                    for e, g in zip(expected, got)))


def _loss_close(expected: float, got) -> bool:
    if type(got) is not float:
        return False
    if math.isnan(expected) or math.isinf(expected):
        return math.isnan(got) if math.isnan(expected) else got == expected
    return math.isclose(got, expected, rel_tol=LOSS_REL, abs_tol=0.0)


def first_difference(expected: list[dict], got: list[dict], fields: tuple) -> tuple | None:
    """(window index, field) of the first disagreement, or None."""
    for i, (exp, out) in enumerate(zip(expected, got)):
        returned = returned_pair(out)
        for field in fields:
            if field == "type":
                ok = (returned is not None and type(returned[0]) is float
                      and type(returned[1]) is bool)
            elif field == "loss":
                ok = returned is not None and _loss_close(exp["returned"][0], returned[0])
            elif field == "skipped":
                ok = returned is not None and returned[1] is exp["returned"][1]
            elif field == "params":
                ok = _params_close(exp["params"], out.get("params"))
            else:
                ok = type(out.get(field)) is float and out[field] == exp[field]
            if not ok:
                return i, field
    if len(got) != len(expected):
        return min(len(got), len(expected)), "windows"
    return None


MISTAKES = {
    "clip_before_unscale": "you clip before scaler.unscale_(optimizer): the gradients are still "
                           "multiplied by the scale, so clipping shrinks them far too much. Unscale "
                           "first, then clip_grad_norm_.",
    "no_clip": "max_grad_norm was ignored: when it is not None, clip with torch.nn.utils."
               "clip_grad_norm_(model.parameters(), max_grad_norm) after scaler.unscale_(optimizer).",
    "sum_not_mean": "the gradients add up to n times the mean: backpropagate scaler.scale(loss / n), "
                    "so that the window's gradient is that of the mean loss over its micro-batches.",
    "zero_grad_each": "you zero the gradients before every micro-batch, so only the last one counts: "
                      "zero them once, at the start of the window.",
    "no_zero_grad": "the previous window's gradients are still there: start every window with "
                    "optimizer.zero_grad(set_to_none=True).",
    "step_each": "you step (and update the scaler) after every micro-batch: accumulate over the "
                 "whole window and step once, after the last micro-batch.",
    "scheduler_on_skip": "the schedule advanced on a skipped step: call scheduler.step() only when "
                         "the optimizer really stepped (the scaler skips a step on inf/NaN).",
    "skip_from_loss": "you decide 'skipped' from the loss, but the scaler skips on inf/NaN "
                      "gradients, which a scale too large for the loss produces with a finite "
                      "loss: ask the scaler (its scale backs off exactly when it skipped).",
    "last_loss": "you return the last micro-batch's loss: return the mean over the window.",
    "no_autocast": "the forward pass ran in float32: run it and the loss under torch.autocast("
                   "device_type, dtype=torch.bfloat16) on a CPU model.",
    "float16_on_cpu": "the forward pass ran in float16 on a CPU model: the contract asks for "
                      "bfloat16 whenever the device type is not 'cuda'.",
}
