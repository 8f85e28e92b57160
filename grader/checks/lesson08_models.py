"""The models lesson 08's hidden checks build, as source run on both sides of the boundary.

The same source is executed in the worker (next to the learner's code, by
`learner.run`) and here, in the trusted process, so both sides build identical
models from the same plain-data spec and seed. The learner's answer comes back
as plain data; the expected one is computed here, on the trusted copy.

Exercise 8.1 gets small FP16 networks with one drawn module broken; Exercise
8.2 gets a tiny classifier, a plain SGD, a step-decay schedule and a real
`torch.amp.GradScaler("cpu")`.
"""

from __future__ import annotations

import contextlib

import torch

# Built as FP16 models on the CPU: overflow at 65504 is what the lesson is about.
BROKEN_MODELS = r'''
import math as _g08_math
import torch as _g08_torch
import torch.nn.functional as _g08_F

_g08_nn = _g08_torch.nn


class _G08NaiveSoftmax(_g08_nn.Module):
    """softmax without subtracting the maximum: exp overflows FP16 above 11.09."""

    def forward(self, x):
        e = x.exp()
        return e / e.sum(-1, keepdim=True)


class _G08OnePassNorm(_g08_nn.Module):
    """Layer norm with the one-pass variance E[x^2] - E[x]^2."""

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = (x * x).mean(-1, keepdim=True) - mean * mean
        return (x - mean) / (var + 1e-3).sqrt()


class _G08Gain(_g08_nn.Module):
    """Multiplies by a gain and returns (output, its largest magnitude): a tuple."""

    def __init__(self):
        super().__init__()
        self.gain = 1.0

    def forward(self, x):
        y = x * self.gain
        return y, y.abs().amax()


class _G08Attention(_g08_nn.Module):
    """Single-head self-attention over the rows of x; the logits are computed inline."""

    def __init__(self, width):
        super().__init__()
        self.qkv = _g08_nn.Linear(width, 3 * width)
        self.proj = _g08_nn.Linear(width, width)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        logits = (q @ k.transpose(-2, -1)) / _g08_math.sqrt(q.shape[-1])
        return self.proj(logits.softmax(-1) @ v)


class _G08Residual(_g08_nn.Module):
    def __init__(self, width):
        super().__init__()
        self.inner = _g08_nn.Sequential(_g08_nn.LayerNorm(width), _g08_nn.Linear(width, width))

    def forward(self, x):
        return x + self.inner(x)


class _G08Swapped(_g08_nn.Module):
    """Registers `second` before `first`, but calls first, then second."""

    def __init__(self, width):
        super().__init__()
        self.second = _g08_nn.Linear(width, width)
        self.first = _g08_nn.Linear(width, width)

    def forward(self, x):
        return self.second(_g08_torch.tanh(self.first(x)))


def _g08_block(kind, width):
    if kind == "mlp":
        return _g08_nn.Sequential(_g08_nn.Linear(width, 2 * width), _g08_nn.GELU(),
                                  _g08_nn.Linear(2 * width, width))
    if kind == "softmax":
        return _g08_nn.Sequential(_g08_nn.Linear(width, width), _G08NaiveSoftmax())
    if kind == "norm":
        return _g08_nn.Sequential(_g08_nn.Linear(width, width), _G08OnePassNorm())
    if kind == "gain":
        return _G08Gain()
    if kind == "attention":
        return _G08Attention(width)
    if kind == "residual":
        return _G08Residual(width)
    if kind == "swapped":
        return _G08Swapped(width)
    raise ValueError(kind)


class _G08Net(_g08_nn.Module):
    def __init__(self, width, kinds, root_exp):
        super().__init__()
        self.inp = _g08_nn.Linear(width, width)
        self.blocks = _g08_nn.ModuleList(_g08_block(kind, width) for kind in kinds)
        self.out = _g08_nn.Linear(width, 4)
        self.root_exp = root_exp

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
            if isinstance(h, tuple):
                h = h[0]
        out = self.out(h)
        return (out * 40).exp() if self.root_exp else out


def _g08_break(model, target, how):
    """Break the module named `target` in the way `how` names."""
    module = model.get_submodule(target)
    with _g08_torch.no_grad():
        if how == "nan_weight":
            module.weight[0, 0] = float("nan")
        elif how == "huge_weight":
            module.weight.fill_(30000.0)
        elif how == "sharpen":  # a Linear feeding the naive softmax
            module.weight.mul_(400.0)
        elif how == "offset":  # a Linear feeding the one-pass norm
            module.bias.fill_(300.0)
        elif how == "gain":
            module.gain = 60000.0
        elif how == "logits":  # the query and key rows of an attention's qkv
            width = module.proj.in_features
            module.qkv.weight[:2 * width].mul_(300.0)
        else:
            raise ValueError(how)


def _g08_build(spec):
    """(model, x) for a spec {"seed", "width", "kinds", "root_exp", "breaks": [[target, how]]}."""
    _g08_torch.manual_seed(spec["seed"])
    model = _G08Net(spec["width"], spec["kinds"], spec["root_exp"])
    with _g08_torch.no_grad():
        for p in model.parameters():
            p.copy_(_g08_torch.randn(p.shape) * 0.5)
    for target, how in spec["breaks"]:
        _g08_break(model, target, how)
    x = _g08_torch.randn(4, spec["width"])
    return model.half(), x.half()


def _g08_hooks_left(model):
    nn_module = _g08_torch.nn.modules.module
    local = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return local + len(nn_module._global_forward_hooks) + len(nn_module._global_forward_pre_hooks)


def _g08_fingerprint(model):
    return [p.detach().view(_g08_torch.int16).clone() for p in model.parameters()]


def _g08_unchanged(model, fingerprint):
    return all(_g08_torch.equal(a, b) for a, b in zip(fingerprint, _g08_fingerprint(model)))
'''

FIRST_NONFINITE_DRIVER = BROKEN_MODELS + r'''

def __grader_08_first(specs):
    """For each spec: the learner's answer, hooks left behind, and whether the model changed."""
    results = []
    for spec in specs:
        model, x = _g08_build(spec)
        fingerprint = _g08_fingerprint(model)
        try:
            answer = first_nonfinite(model, (x,))
        except NotImplementedError:
            raise
        except Exception as exc:
            results.append({"raised": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        results.append({"answer": answer, "hooks_left": _g08_hooks_left(model),
                        "unchanged": _g08_unchanged(model, fingerprint)})
    return results
'''

# A classifier whose forward takes (x, y) and returns the loss, like the lesson's TinyLM.
TRAINING = r'''
import torch as _g08_torch
import torch.nn.functional as _g08_F


class _G08Classifier(_g08_torch.nn.Module):
    def __init__(self, n_in, n_hidden, n_out):
        super().__init__()
        nn = _g08_torch.nn
        self.net = nn.Sequential(nn.Linear(n_in, n_hidden), nn.Tanh(), nn.Linear(n_hidden, n_out))

    def forward(self, x, y):
        return _g08_F.cross_entropy(self.net(x), y)


class _G08SGD:
    """torch.optim.SGD without momentum: what GradScaler and the exercise use of it."""

    def __init__(self, params, lr):
        self.param_groups = [{"params": list(params), "lr": lr}]

    def zero_grad(self, set_to_none=True):
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def step(self):
        lr = self.param_groups[0]["lr"]
        with _g08_torch.no_grad():
            for p in self.param_groups[0]["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-lr)


class _G08StepLR:
    """lr = base_lr * gamma ** (number of step() calls), like StepLR(step_size=1)."""

    def __init__(self, optimizer, gamma):
        self.optimizer, self.gamma, self.calls = optimizer, gamma, 0
        self.base = [group["lr"] for group in optimizer.param_groups]

    def step(self):
        self.calls += 1
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * self.gamma ** self.calls


def _g08_setup(case):
    """Model, optimizer, scheduler, scaler and micro-batches for a plain-data case."""
    g = _g08_torch.Generator().manual_seed(case["seed"])
    _g08_torch.manual_seed(case["seed"])
    model = _G08Classifier(6, 12, 3)
    optimizer = _G08SGD(model.parameters(), lr=case["lr"])
    scheduler = _G08StepLR(optimizer, gamma=0.5)
    scaler = _g08_torch.amp.GradScaler("cpu", init_scale=case["init_scale"],
                                       growth_interval=case["growth_interval"])
    micro = []
    for i in range(case["windows"] * case["accumulation_steps"]):
        x = _g08_torch.randn(case["rows"], 6, generator=g)
        if i in case["inf_at"]:
            x[0, 0] = float("inf")
        micro.append((x, _g08_torch.randint(0, 3, (case["rows"],), generator=g)))
    return model, optimizer, scheduler, scaler, micro


def _g08_checksum(model):
    """Two numbers that move with every parameter: the sum and the sum of squares, in float64."""
    params = [p.detach().double() for p in model.parameters()]
    return [float(sum(p.sum() for p in params)), float(sum((p * p).sum() for p in params))]
'''

TRAINING_DRIVER = TRAINING + r'''

def __grader_08_train(cases):
    """For each case: the learner's records, a checksum before each forward, the final state."""
    results = []
    for case in cases:
        model, optimizer, scheduler, scaler, micro = _g08_setup(case)
        seen = []
        model.register_forward_pre_hook(lambda module, args: seen.append(_g08_checksum(module)))
        records = train_accumulated(model, optimizer, scheduler, scaler, micro,
                                    case["accumulation_steps"], getattr(_g08_torch, case["dtype"]),
                                    case["max_grad_norm"])
        results.append({"records": records, "checksums": seen, "final": _g08_checksum(model),
                        "scale": scaler.get_scale(), "lr": optimizer.param_groups[0]["lr"]})
    return results
'''


def load(source: str) -> dict:
    """Execute grader-authored source here and return its namespace."""
    namespace: dict = {"__name__": "lesson08_models"}
    exec(compile(source, "<lesson 08 models>", "exec"), namespace)
    return namespace


@contextlib.contextmanager
def single_thread():
    """Run the references on one thread, as the workers do: tiny FP16 kernels on a busy machine
    spend more time waking a second thread than computing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
