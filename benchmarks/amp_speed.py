"""What automatic mixed precision buys: step time, speed-up and peak memory per mode.

Run from the repository root:

    python benchmarks/amp_speed.py            # GPU sizes on CUDA, tiny sizes on CPU
    python benchmarks/amp_speed.py --json out.json

It prints the device, the torch version and one row per training mode of the
same MLP (FP32 with TF32 off, TF32, FP16 + GradScaler, BF16 autocast), then a
bf16 matmul micro-benchmark against the device's datasheet peak, then the step
time of the manual recipe of lesson 04 (FP16 working copy, FP32 master weights,
DynamicLossScaler) relative to torch AMP. On a machine without CUDA the same
code runs with CPU sizes and says so; its numbers only show that it works.

Lesson 05 (solutions/05_amp_training.ipynb) explains every number printed here.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

# NVIDIA datasheet values for dense BF16 Tensor Core math (the sparsity figures
# halved), from the course's reference notes, section 7: H100 SXM and H200 SXM
# share the GH100 compute, 1,979 TFLOP/s sparse = 989.4 dense. Other parts are
# left out on purpose rather than quoted from memory; pass --peak-tflops.
BF16_DENSE_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4}

MODES = ("FP32 (TF32 off)", "TF32", "FP16 + scaler", "BF16")

GPU_SIZES = {"width": 4096, "depth": 6, "batch": 1024, "warmup": 10, "iters": 50,
             "matmul_n": 8192, "matmul_iters": 30}
CPU_SIZES = {"width": 256, "depth": 3, "batch": 64, "warmup": 3, "iters": 15,
             "matmul_n": 512, "matmul_iters": 5}


# -- the model and the modes ---------------------------------------------------

def make_mlp(width: int, depth: int, device: torch.device, seed: int = 0) -> torch.nn.Module:
    """`depth` blocks of Linear(width, width) + ReLU: all GEMMs, all multiples of 8."""
    torch.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers).to(device)


def set_tf32(enabled: bool) -> None:
    """TF32 is a math mode of FP32 matmuls and convolutions; set both switches explicitly."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def amp_step_fn(model, optimizer, device_type: str, mode: str):
    """Return step(x, y) -> loss tensor for one mode. Nothing here syncs except GradScaler.step."""
    if mode in ("FP32 (TF32 off)", "TF32"):
        def step(x, y):
            optimizer.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            return loss
        return step
    if mode == "FP16 + scaler":
        scaler = torch.amp.GradScaler(device_type)  # the device, always: see lesson 05

        def step(x, y):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type, dtype=torch.float16):
                loss = F.mse_loss(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            return loss
        return step
    if mode == "BF16":
        def step(x, y):  # BF16 has FP32's range: no loss scaler (lesson 06)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type, dtype=torch.bfloat16):
                loss = F.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            return loss
        return step
    raise ValueError(f"unknown mode {mode!r}")


# -- lesson 04's manual recipe ------------------------------------------------

class DynamicLossScaler:
    """Lesson 04's DynamicLossScaler: its interface (scale, update) and its exact update rule.

    The scale is held as a float32, like GradScaler's; it backs off at once on an
    overflow and grows on the growth_interval-th consecutive clean update, never to inf.
    """

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.factors = (growth_factor, backoff_factor, growth_interval)
        self.value = np.float32(init_scale)     # the loss scale, a float32
        self.clean_steps = 0                    # GradScaler calls this the growth tracker

    @property
    def scale(self) -> float:
        return float(self.value)

    def update(self, overflow: bool) -> None:
        grow, back_off, interval = self.factors
        if overflow:
            self.value, self.clean_steps = np.float32(self.scale * back_off), 0
            return
        self.clean_steps += 1
        if self.clean_steps == interval:
            with np.errstate(over="ignore"):
                grown = np.float32(self.scale * grow)
            self.value = grown if np.isfinite(grown) else self.value   # never grow to inf
            self.clean_steps = 0


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
        self.scaler = scaler or DynamicLossScaler()
        self.skipped = 0

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
        if found_inf:
            self.skipped += 1
        else:
            for master, grad in zip(self.master, grads):
                master.grad = grad
            self.optimizer.step()
            with torch.no_grad():
                torch._foreach_copy_(self.low, self.master)  # FP32 -> FP16 working copy
        self.scaler.update(found_inf)
        return loss


# -- timing ----------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step, x, y, device, warmup: int, iters: int) -> tuple[float, float | None]:
    """Mean milliseconds per step after `warmup` untimed steps, and peak MiB during the timed steps."""
    for _ in range(warmup):
        step(x, y)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(iters):
        step(x, y)
    sync(device)
    ms = (time.perf_counter() - start) * 1e3 / iters
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return ms, peak


def run_modes(device, sizes, lr=1e-3) -> dict:
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(sizes["batch"], sizes["width"], generator=g).to(device)
    y = torch.randn(sizes["batch"], sizes["width"], generator=g).to(device)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    rows = {}
    try:
        for mode in MODES:
            set_tf32(mode == "TF32")
            model = make_mlp(sizes["width"], sizes["depth"], device)
            optimizer = torch.optim.SGD(model.parameters(), lr=lr)
            step = amp_step_fn(model, optimizer, device.type, mode)
            rows[mode] = time_step(step, x, y, device, sizes["warmup"], sizes["iters"])
            del model, optimizer, step
            if device.type == "cuda":
                torch.cuda.empty_cache()
        set_tf32(False)
        manual = ManualMixedPrecision(make_mlp(sizes["width"], sizes["depth"], device), lr=lr)
        rows["manual FP16 (lesson 04)"] = time_step(manual.step, x, y, device,
                                                    sizes["warmup"], sizes["iters"])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    return rows


def matmul_tflops(device, n: int, iters: int, dtype=torch.bfloat16) -> float:
    """TFLOP/s of an n x n x n matmul (2 n^3 flops), averaged over `iters` after warm-up."""
    g = torch.Generator(device="cpu").manual_seed(2)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=c)
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        torch.mm(a, b, out=c)
    sync(device)
    seconds = (time.perf_counter() - start) / iters
    return 2 * n**3 / seconds / 1e12


def peak_for(device_name: str) -> float | None:
    if "PCIe" in device_name or "NVL" in device_name:
        return None  # different clocks and power: not the SXM datasheet figure
    for key, peak in BF16_DENSE_PEAK_TFLOPS.items():
        if key in device_name:
            return peak
    return None


# -- report ------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run the CPU version even if CUDA is available")
    parser.add_argument("--peak-tflops", type=float, help="dense BF16 peak of this device, if not H100/H200 SXM")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    sizes = GPU_SIZES if cuda else CPU_SIZES
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    print(f"device: {name} | torch {torch.__version__} | Python {platform.python_version()}")
    if cuda:
        print(f"settings: GPU. MLP of {sizes['depth']} x Linear({sizes['width']}, {sizes['width']}) + ReLU, "
              f"batch {sizes['batch']}, SGD, MSE; {sizes['warmup']} warm-up + {sizes['iters']} timed steps")
    else:
        print("settings: CPU (no CUDA device, or --cpu). Tiny sizes so that this finishes in seconds: "
              f"MLP of {sizes['depth']} x Linear({sizes['width']}, {sizes['width']}), batch {sizes['batch']}. "
              "TF32 switches do nothing on a CPU and there is no peak-memory counter; the numbers "
              "only show that the code runs.")

    rows = run_modes(device, sizes)
    base = rows[MODES[0]][0]
    print(f"\n{'mode':<26}{'step ms':>10}{'speed-up vs FP32':>18}{'peak MiB':>11}")
    for mode, (ms, peak) in rows.items():
        peak_text = f"{peak:.0f}" if peak is not None else "n/a"
        print(f"{mode:<26}{ms:>10.3f}{base / ms:>17.2f}x{peak_text:>11}")

    n = sizes["matmul_n"]
    tflops = matmul_tflops(device, n, sizes["matmul_iters"])
    peak = args.peak_tflops or (peak_for(name) if cuda else None)
    line = f"\nbf16 matmul {n}x{n}x{n}: {tflops:.1f} TFLOP/s"
    if peak:
        line += f" = {100 * tflops / peak:.1f}% of {peak:.1f} TFLOP/s (dense BF16 peak, NVIDIA datasheet)"
    else:
        line += " (no datasheet peak known for this device; pass --peak-tflops)"
    print(line)

    amp_ms = rows["FP16 + scaler"][0]
    manual_ms = rows["manual FP16 (lesson 04)"][0]
    print(f"manual loop (DynamicLossScaler + FP32 master weights, FP16 copy): {manual_ms:.3f} ms/step "
          f"= {manual_ms / amp_ms:.2f}x torch AMP (FP16 + scaler)")

    targets = {
        "AMP (FP16 + scaler) >= 3x faster than FP32 with TF32 off": base / amp_ms >= 3.0,
        "bf16 matmul >= 70% of the datasheet peak": bool(peak) and tflops / peak >= 0.70,
        "manual loop within 1.15x of torch AMP": manual_ms / amp_ms <= 1.15,
    }
    if cuda:
        print("\ndesign targets (H100/H200):")
        for text, ok in targets.items():
            print(f"  {'PASS' if ok else 'MISS'}  {text}")
    else:
        print("\n(design targets are for an H100/H200 and are not judged on a CPU)")

    if args.json:
        result = {"device": name, "torch": torch.__version__, "cuda": cuda, "sizes": sizes,
                  "modes": {m: {"step_ms": ms, "speedup_vs_fp32": base / ms, "peak_mib": pk}
                            for m, (ms, pk) in rows.items()},
                  "bf16_matmul": {"n": n, "tflops": tflops, "peak_tflops": peak,
                                  "fraction_of_peak": (tflops / peak) if peak else None},
                  "manual_over_amp": manual_ms / amp_ms,
                  "targets": targets if cuda else None}
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
