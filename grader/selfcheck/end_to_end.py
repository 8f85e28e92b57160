"""Self-checks for lesson 08 (a real model, end to end): `first_nonfinite` and `train_accumulated`.

The cases are small and readable, and each expected value follows from how the
case is built (a NaN planted in one weight, a window that must equal one big
step on the concatenated batch), not from a copy of the answer.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from grader.selfcheck.core import SelfCheck

__all__ = ["check_first_nonfinite", "check_train_accumulated"]


# -- Exercise 8.1 ------------------------------------------------------------------------

class _Overflow(nn.Module):
    """Has a child, but makes the inf in its own code: child(x) * 1e39 overflows float32."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(3, 3)

    def forward(self, x):
        return self.inner(x) * 1e39


class _WithStats(nn.Module):
    """Returns a tuple; the first item overflows."""

    def forward(self, x):
        y = x * 1e39
        return y, y.abs().amax()


class _First(nn.Module):
    def forward(self, x):
        out = x
        for module in self.children():
            out = module(out)
            out = out[0] if isinstance(out, tuple) else out
        return out


def _net(*modules) -> nn.Module:
    torch.manual_seed(0)
    net = _First()
    for i, module in enumerate(modules):
        net.add_module(str(i), module)
    return net


def _nan_weight(layer: nn.Linear) -> nn.Linear:
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    return layer


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def check_first_nonfinite(first_nonfinite) -> None:
    x = (torch.ones(2, 3),)
    with SelfCheck("first_nonfinite") as sc:
        healthy = _net(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
        sc.compare("a finite model gives None", None, sc.call(first_nonfinite, healthy, x),
                   cause="return None when no module's output holds an inf or NaN")

        net = _net(nn.Linear(3, 3), nn.ReLU(), _nan_weight(nn.Linear(3, 3)), nn.ReLU(), nn.Linear(3, 2))
        got = sc.call(first_nonfinite, net, x)
        sc.compare("a NaN weight in layer '2' (later layers pass the NaN on)", "2", got,
                   cause="the later layers' outputs are NaN too, but their inputs already were: "
                         "keep the first call whose inputs are finite and whose output is not"
                   if got in ("3", "4", "") else
                   "NaN counts as non-finite too: use torch.isfinite, not torch.isinf"
                   if got is None else "hook every module and name the one whose output goes NaN")
        sc.compare("no hook is left on the model afterwards", 0, _hooks(net),
                   cause="keep the handles of register_forward_hook and call .remove() on each, "
                         "in a finally: block")

        net = _net(nn.Linear(3, 3), _Overflow(), nn.Linear(3, 2))
        got = sc.call(first_nonfinite, net, x)
        sc.compare("a module with a child can make the inf itself", "1", got,
                   cause="its child '1.inner' is finite; the overflow happens in '1''s own forward. "
                         "Hook every module of named_modules(), not only leaves")

        net = _net(nn.Linear(3, 3), _WithStats(), nn.Linear(3, 2))
        got = sc.call(first_nonfinite, net, x)
        sc.compare("a tuple output counts", "1", got,
                   cause="look at every floating-point tensor inside a tuple, list or dict output")

        class Root(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Linear(3, 3)

            def forward(self, x):
                return self.body(x) * 1e39

        sc.compare("the root is named \"\"", "", sc.call(first_nonfinite, Root(), x),
                   cause="named_modules() includes the model itself, with the name \"\"")


# -- Exercise 8.2 ------------------------------------------------------------------------

class _Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x, y):
        return F.cross_entropy(self.net(x), y)


def _batches(n: int, rows: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(rows, 4, generator=g), torch.randint(0, 3, (rows,), generator=g))
            for _ in range(n)]


def _setup(init_scale: float = 2.0**10, growth_interval: int = 1000, lr: float = 0.5):
    model = _Classifier()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=growth_interval)
    return model, opt, sched, scaler


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _one_big_step(model, batches, lr: float) -> torch.Tensor:
    """Plain BF16 SGD on all the micro-batches at once: what one window must equal."""
    model = copy.deepcopy(model)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, y)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    return _flat(model)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def check_train_accumulated(train_accumulated) -> None:
    with SelfCheck("train_accumulated") as sc:
        # 1. one window of 4 micro-batches = one step on the 16 rows together
        model, opt, sched, scaler = _setup()
        start, batches = _flat(model), _batches(4)
        target = _one_big_step(model, batches, lr=0.5)
        records = sc.call(train_accumulated, model, opt, sched, scaler, batches, 4, torch.bfloat16)
        sc.compare("one record per window", 1, len(records) if isinstance(records, list) else records,
                   cause="return a list with one dict per optimizer step (window)")
        error = _relative(_flat(model) - start, target - start)
        sc.row("a window equals one step on its micro-batches together", "relative error under 2%",
               "under 2%" if error < 0.02 else f"{error:.2g}", error < 0.02,
               cause="divide each micro-batch's loss by accumulation_steps and zero the gradients "
                     "once per window; an error near 3 means no division (4x too big), near 0.75 "
                     "that only the last micro-batch counted")
        record = records[0] if isinstance(records, list) and records else {}
        sc.compare("record keys", ["loss", "lr", "scale", "skipped"],
                   sorted(record) if isinstance(record, dict) else record,
                   cause="each record is {'loss': ..., 'scale': ..., 'skipped': ..., 'lr': ...}")
        sc.compare("the record holds the scale and lr the step used", (1024.0, False, 0.5),
                   (record.get("scale"), record.get("skipped"), record.get("lr")),
                   cause="read scaler.get_scale() and param_groups[0]['lr'] before update() and "
                         "scheduler.step()")

        # 2. an overflowing window: nothing moves but the scale
        model, opt, sched, scaler = _setup()
        start, batches = _flat(model), _batches(2)
        batches[1][0][0, 0] = float("inf")
        records = sc.call(train_accumulated, model, opt, sched, scaler, batches, 2, torch.bfloat16)
        sc.compare("an inf in a micro-batch: skipped, weights, lr and scale",
                   (True, True, 0.5, 512.0),
                   (records[0].get("skipped"), bool(torch.equal(_flat(model), start)),
                    opt.param_groups[0]["lr"], scaler.get_scale()),
                   cause="step with scaler.step (it skips on inf/NaN), update once per window, "
                         "and step the scheduler only when the scale did not go down")

        # 3. a growing scale is not a skipped step
        model, opt, sched, scaler = _setup(growth_interval=1)
        records = sc.call(train_accumulated, model, opt, sched, scaler, _batches(4), 2, torch.bfloat16)
        sc.compare("growth_interval=1: (skipped, lr) per window", [(False, 0.5), (False, 0.25)],
                   [(r.get("skipped"), r.get("lr")) for r in records],
                   cause="skipped means update() LOWERED the scale: compare with <, not !=")

        # 4. clipping acts on the unscaled window gradient
        model, opt, sched, scaler = _setup(lr=0.1)
        start = _flat(model)
        sc.call(train_accumulated, model, opt, sched, scaler, _batches(2), 2, torch.bfloat16, 1e-3)
        norm = float((_flat(model) - start).norm())
        # BF16 autocast and FP32 rounding of the weights move the measured norm by ~1e-4.
        sc.row("max_grad_norm=1e-3: the update has norm lr * 1e-3", "0.0001", f"{norm:.3g}",
               abs(norm / 1e-4 - 1) < 1e-3,
               cause="call scaler.unscale_(optimizer) before clip_grad_norm_; clipping the "
                       "scaled gradients gives an update about 1024x too small")
