"""Lesson 07's measuring tools: where the bytes of a training step go, measured on any device.

- `storage_bytes(tensors)`: the bytes of the distinct storages behind some tensors
  (a view and its base count once).
- `MemoryCounter`: a `TorchDispatchMode` that sees every tensor an operator
  creates, keeps a running total of the live bytes and records the peak. It is
  the CPU stand-in for `torch.cuda.max_memory_allocated`.
- `SavedActivations`: `torch.autograd.graph.saved_tensors_hooks` that add up the
  bytes autograd keeps for the backward pass, parameters left out.
- `Recipe`, `TrainingRun` and `measure_model_states`: the memory recipes of the
  lesson built for real (torch.optim optimizers, an FP32 master copy, a
  compensation buffer), with each tensor they keep filed under its category.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
CATEGORIES = ("weights", "grads", "master", "optimizer", "compensation")


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (views of one storage count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


class MemoryCounter(TorchDispatchMode):
    """Live and peak bytes of tensor storages, counted operator by operator.

    Every tensor an operator returns while the mode is active is tracked until
    its storage is freed (a weak reference to the storage tells us when).
    Tensors that already exist when counting starts (the weights, the optimizer
    state) are passed in as `live`, so that `peak` is the high-water mark of
    everything, not just of what the step allocated.

        with MemoryCounter(model.parameters()) as mem:
            loss = model(x).square().mean()
            loss.backward()
        mem.peak, mem.live, mem.ops

    With `timeline=True` it also records the live bytes after every operator.
    """

    def __init__(self, live=(), timeline: bool = False):
        super().__init__()
        self.live = 0
        self.peak = 0
        self.ops = 0  # operators dispatched while counting
        self.timeline: list[int] | None = [] if timeline else None  # live bytes after each operator
        self._tracked: dict[int, weakref.finalize] = {}
        for t in live:
            self.track(t)

    def track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = id(storage)
        if key in self._tracked or storage.device.type == "meta":
            return
        nbytes = storage.nbytes()
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        self._tracked[key] = weakref.finalize(storage, self._freed, key, nbytes)

    def _freed(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._tracked.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor):
                self.track(item)
        if self.timeline is not None:
            self.timeline.append(self.live)
        return out

    def __exit__(self, *exc):
        result = super().__exit__(*exc)
        for finalizer in list(self._tracked.values()):
            finalizer.detach()  # stop counting once the block is over
        self._tracked.clear()
        return result


class SavedActivations:
    """Bytes that autograd saves for the backward pass during a forward pass.

    Parameters (and anything else passed as `exclude`) are left out: they exist
    anyway. A storage saved by several operators counts once.

        with SavedActivations(exclude=model.parameters()) as saved:
            loss = model(x).sum()
        saved.bytes, saved.count
    """

    def __init__(self, exclude=()):
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._seen: set[int] = set()
        self.bytes = 0
        self.count = 0  # tensors saved, shared storages included
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.count += 1
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self._excluded and ptr not in self._seen:
            self._seen.add(ptr)
            self.bytes += storage.nbytes()
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def __enter__(self) -> "SavedActivations":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


# -- the recipes, built for real ----------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """How a model is trained, as far as memory is concerned.

    weights: the dtype the model computes with ("fp32", "fp16", "bf16").
    master: keep an FP32 master copy that the optimizer updates.
    optimizer: "sgd" (no state), "momentum" (one buffer), "adam"/"adamw" (two moments).
    kahan: keep a compensation buffer of the weights' dtype next to each weight.
    autocast: run the forward pass under torch.autocast (BF16); the weights stay FP32.
    """

    weights: str = "fp32"
    master: bool = False
    optimizer: str = "adam"
    kahan: bool = False
    autocast: bool = False

    def as_dict(self) -> dict:
        return {"weights": self.weights, "master": self.master, "optimizer": self.optimizer,
                "kahan": self.kahan}


def make_optimizer(name: str, params, lr: float = 1e-3, **options) -> torch.optim.Optimizer:
    """A torch.optim optimizer by name; `options` (foreach=..., fused=...) go to it unchanged."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, **options)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, **options)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, **options)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, **options)
    raise ValueError(f"unknown optimizer {name!r}; use one of {OPTIMIZERS}")


class TrainingRun:
    """A model trained with a recipe; `step(x, y)` is one forward, backward and update.

    With a master copy, each FP32 master has its own optimizer, and its FP32
    gradient exists only while that one tensor is updated: converting tensor by
    tensor is what keeps the transient FP32 gradient small (DeepSpeed does the
    same in buckets). The Kahan buffer is allocated, not used: this class
    measures memory, and the compensated update itself is Exercise 7.3.
    """

    def __init__(self, model: torch.nn.Module, recipe: Recipe, lr: float = 1e-3, **options):
        self.recipe = recipe
        self.model = model.to(DTYPES[recipe.weights])
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if recipe.master:
            self.masters = [p.detach().float().clone() for p in self.params]
            self.optimizers = [make_optimizer(recipe.optimizer, [m], lr, **options)
                               for m in self.masters]
        else:
            self.masters = []
            self.optimizers = [make_optimizer(recipe.optimizer, self.params, lr, **options)]
        self.compensation = [torch.zeros_like(p) for p in self.params] if recipe.kahan else []

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dtype = DTYPES[self.recipe.weights]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.recipe.autocast):
            out = self.model(x.to(dtype))
        return (out.float() - y).square().mean()

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Forward and backward: afterwards every weight holds its gradient."""
        for p in self.params:
            p.grad = None
        loss = self.loss(x, y)
        loss.backward()
        return loss.detach().item()

    @torch.no_grad()
    def update(self) -> None:
        """The optimizer step (through the FP32 masters, one tensor at a time, if any)."""
        if not self.recipe.master:
            self.optimizers[0].step()
            return
        for p, m, opt in zip(self.params, self.masters, self.optimizers):
            m.grad = p.grad.float()
            opt.step()
            m.grad = None
            p.copy_(m)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        loss = self.backward(x, y)
        self.update()
        return loss

    def state_tensors(self) -> dict[str, list[torch.Tensor]]:
        """Every tensor the run keeps per parameter, by category.

        Optimizer state is the per-element buffers; Adam's `step` counter (one
        number per tensor, not per parameter) is left out.
        """
        states = [v for opt in self.optimizers for state in opt.state.values()
                  for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
        return {"weights": list(self.params),
                "grads": [p.grad for p in self.params if p.grad is not None],
                "master": list(self.masters),
                "optimizer": states,
                "compensation": list(self.compensation)}

    def state_bytes(self) -> dict[str, int]:
        return {name: storage_bytes(ts) for name, ts in self.state_tensors().items()}

    def live_tensors(self) -> list[torch.Tensor]:
        everything = [t for ts in self.state_tensors().values() for t in ts]
        counters = [v for opt in self.optimizers for state in opt.state.values()
                    for v in state.values() if isinstance(v, torch.Tensor) and v.dim() == 0]
        return everything + counters


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class StateMeasurement:
    params: int
    bytes: dict[str, int]  # category -> bytes, after one step, gradients still present
    peak_backward: int  # high-water mark of live bytes in the second step's forward and backward
    peak: int  # high-water mark of live bytes in the whole second step, update included

    @property
    def per_param(self) -> float:
        return sum(self.bytes.values()) / self.params

    def per_param_of(self, category: str) -> float:
        return self.bytes[category] / self.params


def measure_model_states(model: torch.nn.Module, recipe: Recipe, batch: tuple,
                         **options) -> StateMeasurement:
    """Train `model` two steps with `recipe`; measure what it keeps and the peak of step two.

    The first step creates the optimizer state; the second runs under a
    MemoryCounter that starts from everything already alive. `options` go to
    the optimizer (foreach=..., fused=...).
    """
    run = TrainingRun(model, recipe, **options)
    x, y = batch
    run.step(x, y)
    counter = MemoryCounter(run.live_tensors() + [x, y])
    with counter:
        run.backward(x, y)
        peak_backward = counter.peak
        run.update()
    return StateMeasurement(count_params(run.model), run.state_bytes(), peak_backward, counter.peak)
