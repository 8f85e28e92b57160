"""Two TorchDispatchModes for lesson 08: FP16 matmuls on a CPU, and counting operations.

A TorchDispatchMode sees every ATen operation that runs inside its `with`
block, forward and backward alike, after autocast has chosen the dtypes.

FP16 matrix products are slow on most CPUs: without FP16 arithmetic units
PyTorch falls back to a scalar kernel. `emulate_fp16_matmuls()` keeps the FP16
path honest and fast. It runs each FP16 matmul on the same FP16 inputs in FP32
and rounds the product to FP16 once, which is what FP16 hardware with FP32
accumulation computes. Overflow, underflow and the rounding of every matmul
output are FP16's; only the order of the FP32 additions may differ, which moves
about one output in a thousand by one FP16 step.

Public: it ships to learners and imports nothing private.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
            torch.ops.aten.baddbmm.default}


class _FP16Matmuls(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MATMULS and any(isinstance(a, torch.Tensor) and a.dtype == torch.float16
                                    for a in args):
            wide = [a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.float16 else a
                    for a in args]
            return func(*wide, **kwargs).half()  # FP32 accumulation, one rounding to FP16
        return func(*args, **kwargs)


def emulate_fp16_matmuls(enabled: bool = True):
    """Within this block, FP16 matmuls (forward and backward) run as FP32 math on FP16 values."""
    return _FP16Matmuls() if enabled else contextlib.nullcontext()


class OpCounter(TorchDispatchMode):
    """Counts the ATen operations run inside the block, by name (`aten.add_.Tensor`, ...)."""

    def __init__(self):
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def host_syncs(self) -> int:
        """Calls of `.item()` (and `float(t)`, `bool(t)`): each waits for the device."""
        return self.counts.get("aten._local_scalar_dense.default", 0)
