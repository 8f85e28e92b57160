"""Lesson 08, Exercise 8.1: the expected answer of `first_nonfinite`, and why an answer is wrong.

`FirstNonfiniteTrace` runs a spec's model here, in the trusted process, with
hooks on every module, and records each forward call as it finishes. The
expected answer is the first call with finite inputs and a non-finite output.
The trace also knows what the usual mistakes would answer (the first
non-finite output whatever the input, the last match, the first non-finite
input, leaves only, direct children only, inf only, registration order, tensor
outputs only), so a wrong answer can be matched to its likely cause.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grader.checks.lesson08_models import BROKEN_MODELS, load, single_thread
from grader.wire import Opaque

_models = load(BROKEN_MODELS)

HOW = {"nan_weight": "one weight set to NaN", "huge_weight": "weights set to 30000",
       "sharpen": "weights x400 (feeding a softmax written as exp(x) / sum exp(x))",
       "offset": "bias 300 (feeding a layer norm with the one-pass variance E[x^2] - E[x]^2)",
       "gain": "gain 60000 (it returns a tuple)", "logits": "query and key weights x300"}


def describe_spec(spec: dict) -> str:
    blocks = ", ".join(f"blocks.{i}: {kind}" for i, kind in enumerate(spec["kinds"]))
    broken = ("; ".join(f"{target}: {HOW[how]}" for target, how in spec["breaks"])
              or "no module deliberately broken")
    root = "; the root returns exp(40 * out(h))" if spec["root_exp"] else ""
    return (f"an FP16 network inp -> [{blocks}] -> out, width {spec['width']}, seed {spec['seed']}; "
            f"{broken}{root}; first_nonfinite(model, (x,)) with x of shape (4, {spec['width']}).")


def _floating(value, tensors_only: bool = False):
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif not tensors_only and isinstance(value, (tuple, list)):
        for item in value:
            yield from _floating(item)
    elif not tensors_only and isinstance(value, dict):
        for item in value.values():
            yield from _floating(item)


def _bad(value, tensors_only: bool = False) -> bool:
    return any(not bool(torch.isfinite(t).all()) for t in _floating(value, tensors_only))


def _has_inf(value) -> bool:
    return any(bool(torch.isinf(t).any()) for t in _floating(value))


@dataclass
class Call:
    name: str
    order: int  # position in named_modules(), i.e. registration order
    leaf: bool
    bad_in: bool  # a positional input holds an inf or NaN
    bad_out: bool
    inf_in: bool
    inf_out: bool
    bad_tensor_out: bool  # non-finite when only a bare tensor output is looked at

    @property
    def origin(self) -> bool:
        """The inf or NaN is born here: finite inputs, non-finite output."""
        return self.bad_out and not self.bad_in


def _first(names):
    return next(iter(names), None)


class FirstNonfiniteTrace:
    """Every forward call of a spec's model, in the order the calls finish."""

    def __init__(self, spec: dict):
        model, x = _models["_g08_build"](spec)
        modules = list(model.named_modules())
        names = {m: n for n, m in modules}
        order = {m: i for i, (_, m) in enumerate(modules)}
        self.class_of = {n: type(m).__name__ for n, m in modules}
        self.calls: list[Call] = []
        self.bad_inputs: list[str] = []  # in the order calls start

        def before(module, inputs):
            if _bad(inputs):
                self.bad_inputs.append(names[module])

        def after(module, inputs, output):
            self.calls.append(Call(names[module], order[module], not any(module.children()),
                                   _bad(inputs), _bad(output), _has_inf(inputs), _has_inf(output),
                                   _bad(output, tensors_only=True)))

        handles = [h for m in names for h in (m.register_forward_pre_hook(before),
                                              m.register_forward_hook(after))]
        try:
            with single_thread(), torch.no_grad():
                model(x)
        finally:
            for h in handles:
                h.remove()
        self.expected = _first(c.name for c in self.calls if c.origin)

    def _mistakes(self) -> list[tuple[str | None, str]]:
        origins = [c for c in self.calls if c.origin]
        e = self.expected
        return [
            (_first(c.name for c in self.calls if c.bad_out),
             f"this module's output is non-finite, but so was its input: it only passed the inf or "
             f"NaN on. Skip calls whose inputs are already non-finite; the first one is born in {e!r}"),
            (_first(c.name for c in reversed(origins)),
             "you kept the last match; hooks fire as forward calls finish, so keep the first name "
             "and ignore the later ones"),
            (_first(self.bad_inputs),
             f"you named the first module whose INPUT is non-finite; name the one whose output "
             f"first goes non-finite while its inputs are finite: {e!r}"),
            (_first(c.name for c in origins if c.leaf),
             f"you hooked only leaf modules; {e!r} has children but makes the inf or NaN in its own "
             "forward code. Hook every module of named_modules()"),
            (_first(c.name for c in origins if c.name.count(".") == 0 and c.name),
             "you watched only the model's direct children; hook every module of named_modules(), "
             "nested ones and the root included"),
            (_first(c.name for c in self.calls if c.inf_out and not c.inf_in),
             "NaN counts too: test with torch.isfinite (False for inf and NaN), not torch.isinf"),
            (_first(c.name for c in sorted(origins, key=lambda c: c.order)),
             "named_modules() lists modules in the order they were registered in __init__, not the "
             "order forward calls them: record names in the order your hooks fire"),
            (_first(c.name for c in self.calls if c.bad_tensor_out and not c.bad_in),
             f"an output can be a tuple: {e!r} returns one. Look at every floating-point tensor "
             "inside tuples, lists and dicts"),
            (_first(c.name for c in origins if c.name),
             "the root module counts too: named_modules() gives it the name \"\", and its own "
             "forward code can make the inf"),
        ]

    def cause(self, got) -> str:
        e = self.expected
        if isinstance(got, Opaque):
            return "return the module's name (a str, as named_modules() gives it), not the module"
        if got is not None and type(got) is not str:
            return "return the module's name as a str, or None when every output is finite"
        if e is not None and got == self.class_of.get(e):
            return "that is the class name; return the qualified name from named_modules(), " \
                   "such as 'blocks.1.attn'"
        causes = [cause for answer, cause in self._mistakes() if answer == got and answer != e]
        if causes:  # two mistakes can give the same answer: name both
            return " Or: ".join(causes[:2])
        if e is None:
            return "every output of this model is finite, so the answer is None"
        return (f"the inf or NaN is born in {e!r}: hook every module of named_modules(), root "
                "included, and keep the first call (in the order calls finish) whose inputs are "
                "finite and whose output holds a non-finite floating-point tensor")


_traces: dict[str, FirstNonfiniteTrace] = {}


def first_nonfinite_trace(spec: dict) -> FirstNonfiniteTrace:
    key = repr(sorted(spec.items()))
    if key not in _traces:
        _traces[key] = FirstNonfiniteTrace(spec)
    return _traces[key]
