"""Two TorchDispatchModes for lesson 08: low-precision matmuls on a CPU, and counting operations.

A TorchDispatchMode sees every ATen operation that runs inside its `with`
block, forward and backward alike, after autocast has chosen the dtypes.

Low-precision matrix products are slow on many CPUs. FP16 has no arithmetic
units on most of them, so PyTorch falls back to a scalar kernel, and BF16 is
fast only where the CPU has BF16 instructions (AVX512-BF16, AMX).
`emulate_matmuls(dtype)` keeps the low-precision path honest and fast on every
CPU. It runs each FP16 (or BF16) matmul on the same FP16 (BF16) inputs in FP32
and rounds the product to FP16 (BF16) once, which is what hardware with FP32
accumulation computes. Overflow, underflow and the rounding of every matmul
output are the low-precision format's; only the order of the FP32 additions
may differ, which moves at most a few outputs in a thousand by one step of
the format.

Public: it ships to learners and imports nothing private.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
            torch.ops.aten.baddbmm.default}


class _EmulatedMatmuls(TorchDispatchMode):
    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MATMULS and any(isinstance(a, torch.Tensor) and a.dtype == self.dtype
                                    for a in args):
            wide = [a.float() if isinstance(a, torch.Tensor) and a.dtype == self.dtype else a
                    for a in args]
            return func(*wide, **kwargs).to(self.dtype)  # FP32 accumulation, one rounding
        return func(*args, **kwargs)


def emulate_matmuls(dtype: torch.dtype | None, enabled: bool = True):
    """Within this block, `dtype` matmuls (forward and backward) run as FP32 math on `dtype` values.

    `dtype` is torch.float16 or torch.bfloat16; with None or enabled=False it does nothing.
    """
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"emulate_matmuls emulates torch.float16 or torch.bfloat16, not {dtype}")
    return _EmulatedMatmuls(dtype)


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
