"""What automatic mixed precision buys: step time, speed-up and peak memory per mode.

Run from the repository root, with the course installed (`pip install -e .`):

    python benchmarks/amp_speed.py            # GPU sizes on CUDA, tiny sizes on CPU
    python benchmarks/amp_speed.py --json out.json

The measurement itself is `grader/labs/amp_speed.py`, which ships to learners and
which lesson 05 runs: one row per training mode of the same MLP (FP32 with TF32
off, TF32, FP16 + GradScaler, BF16 autocast) and a bf16 matmul against the
device's datasheet peak. This script adds the manual recipe of lesson 04 (FP16
working copy, FP32 master weights, a dynamic loss scaler) and judges the course's
design targets on an H100/H200. On a machine without CUDA the same code runs with
CPU sizes and says so; its numbers only show that it works.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch
import torch.nn.functional as F

from grader.labs.amp_speed import KernelLossScaler, arguments, measure, write_json

MANUAL = "manual FP16 (lesson 04)"


class ManualMixedPrecision:
    """FP16 working copy for forward/backward, FP32 master weights for the update.

    Every per-parameter operation is a single torch._foreach_* call, so the cost
    of the bookkeeping does not grow with Python loops over elements.
    """

    def __init__(self, model: torch.nn.Module, lr: float, low_dtype=torch.float16, scaler=None):
        self.low_dtype = low_dtype
        self.master = [p.detach().clone().float() for p in model.parameters()]
        self.model = copy.deepcopy(model).to(low_dtype)
        self.low = list(self.model.parameters())
        self.optimizer = torch.optim.SGD(self.master, lr=lr)
        self.scaler = scaler or KernelLossScaler()

    def step(self, x, y) -> torch.Tensor:
        for p in self.low:
            p.grad = None
        out = self.model(x.to(self.low_dtype))
        loss = F.mse_loss(out.float(), y)                 # the loss in FP32
        (loss * float(self.scaler.scale)).backward()      # FP16 grads, scaled
        half_grads = [p.grad for p in self.low]
        # x * 0 is 0 for every finite x and NaN for inf/NaN, and a norm of zeros
        # cannot overflow: exact, on the FP16 grads (half the bytes), one sync.
        poison = torch.stack(torch._foreach_norm(torch._foreach_mul(half_grads, 0.0))).sum()
        grads = [g.float() for g in half_grads]           # FP32 copies (one cast per tensor)
        inv_scale = float(np.float32(1.0 / np.float64(self.scaler.scale)))  # as GradScaler
        torch._foreach_mul_(grads, inv_scale)
        found_inf = bool(torch.isnan(poison))
        if not found_inf:
            for master, grad in zip(self.master, grads):
                master.grad = grad
            self.optimizer.step()
            with torch.no_grad():
                torch._foreach_copy_(self.low, self.master)  # FP32 -> FP16 working copy
        self.scaler.update(found_inf)
        return loss


def main(argv=None) -> int:
    args = arguments(argv, __doc__.split("\n\n")[0])
    result = measure(args, extra={MANUAL: lambda model: ManualMixedPrecision(model, lr=1e-3).step})
    modes = result["modes"]
    amp_ms, manual_ms = modes["FP16 + scaler"]["step_ms"], modes[MANUAL]["step_ms"]
    print(f"manual loop (dynamic loss scaler + FP32 master weights, FP16 copy): {manual_ms:.3f} ms/step "
          f"= {manual_ms / amp_ms:.2f}x torch AMP (FP16 + scaler)")
    matmul = result["bf16_matmul"]
    targets = {
        "AMP (FP16 + scaler) >= 3x faster than FP32 with TF32 off":
            modes["FP16 + scaler"]["speedup_vs_fp32"] >= 3.0,
        "bf16 matmul >= 70% of the datasheet peak": bool(matmul["peak_tflops"])
            and matmul["fraction_of_peak"] >= 0.70,
        "manual loop within 1.15x of torch AMP": manual_ms / amp_ms <= 1.15,
    }
    if result["cuda"]:
        print("\ndesign targets (H100/H200):")
        for text, ok in targets.items():
            print(f"  {'PASS' if ok else 'MISS'}  {text}")
    else:
        print("\n(design targets are for an H100/H200 and are not judged on a CPU)")
    result.update(manual_over_amp=manual_ms / amp_ms, targets=targets if result["cuda"] else None)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
