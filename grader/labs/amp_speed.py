"""Lesson 05's measuring tools: what automatic mixed precision buys, timed on any device.

- `MODES`, `make_mlp`, `amp_step`: the same MLP trained four ways (FP32 with TF32
  off, TF32, FP16 autocast + GradScaler, BF16 autocast), one step function each.
- `time_step`: mean milliseconds per step after warm-up, with `synchronize`
  around the clock, and the peak memory of the timed steps on CUDA.
- `run_modes`: one row per mode (and per extra step function you pass in).
- `matmul_tflops`, `peak_for`: a large BF16 matmul against the datasheet peak.
- `KernelLossScaler`: a dynamic loss scaler that calls GradScaler's own update
  kernel, for the manual recipe of lesson 05 (it does not show lesson 04's rule).

From the command line (GPU sizes on CUDA, tiny sizes on a CPU):

    python -m grader.labs.amp_speed [--cpu] [--peak-tflops N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch
import torch.nn.functional as F

MODES = ("FP32 (TF32 off)", "TF32", "FP16 + scaler", "BF16")

# NVIDIA datasheet values for dense BF16 Tensor Core math (the sparsity figures
# halved): H100 SXM and H200 SXM share the GH100 compute, 1,979 TFLOP/s sparse.
# Other parts are left out rather than quoted from memory; pass --peak-tflops.
BF16_DENSE_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4}

GPU_SIZES = {"width": 4096, "depth": 6, "batch": 1024, "warmup": 10, "iters": 50,
             "matmul_n": 8192, "matmul_iters": 30}
CPU_SIZES = {"width": 128, "depth": 3, "batch": 64, "warmup": 3, "iters": 10,
             "matmul_n": 512, "matmul_iters": 5}


class KernelLossScaler:
    """A dynamic loss scaler with GradScaler's state (a float32 scale, an int32 growth
    tracker) and GradScaler's own update kernel, `torch._amp_update_scale_`."""

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self._scale = torch.full((), init_scale, dtype=torch.float32)
        self._growth_tracker = torch.zeros((), dtype=torch.int32)
        self._factors = (growth_factor, backoff_factor, growth_interval)

    @property
    def scale(self) -> float:
        return self._scale.item()

    def update(self, found_inf: bool) -> None:
        flag = torch.full((1,), float(found_inf))
        torch._amp_update_scale_(self._scale, self._growth_tracker, flag, *self._factors)


def set_tf32(enabled: bool) -> None:
    """TF32 is a math mode of FP32 matmuls and convolutions; set both switches explicitly."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def make_mlp(width: int, depth: int, device, seed: int = 0) -> torch.nn.Module:
    """`depth` blocks of Linear(width, width) + ReLU: all GEMMs, all multiples of 8."""
    torch.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers).to(device)


def amp_step(mode: str, model, optimizer, device_type: str):
    """step(x, y) -> loss tensor for one of MODES. Nothing here reads a value back to
    the host except GradScaler.step (see lesson 05, section 5)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; pick one of {MODES}")
    low = {"FP16 + scaler": torch.float16, "BF16": torch.bfloat16}.get(mode)
    # BF16 has FP32's range and trains without a scaler (lesson 06); a disabled
    # scaler passes the loss and the step straight through.
    scaler = torch.amp.GradScaler(device_type, enabled=(mode == "FP16 + scaler"))

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=low or torch.bfloat16, enabled=low is not None):
            loss = F.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss
    return step


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step, x, y, device, warmup: int, iters: int) -> tuple[float, float | None]:
    """Mean milliseconds per step after `warmup` untimed steps, and the peak MiB
    allocated during the timed steps (None off CUDA)."""
    device = torch.device(device)
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


def run_modes(device, sizes: dict, lr: float = 1e-3, extra: dict | None = None) -> dict:
    """{mode: (ms per step, peak MiB)} for every mode of MODES, then for each
    `extra` entry {name: make_step(model) -> step(x, y)} on a fresh model (TF32 off)."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(sizes["batch"], sizes["width"], generator=g).to(device)
    y = torch.randn(sizes["batch"], sizes["width"], generator=g).to(device)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    timing = (device, sizes["warmup"], sizes["iters"])
    rows = {}
    try:
        for mode in MODES:
            set_tf32(mode == "TF32")
            model = make_mlp(sizes["width"], sizes["depth"], device)
            optimizer = torch.optim.SGD(model.parameters(), lr=lr)
            rows[mode] = time_step(amp_step(mode, model, optimizer, device.type), x, y, *timing)
            del model, optimizer
            if device.type == "cuda":
                torch.cuda.empty_cache()
        set_tf32(False)
        for name, make_step in (extra or {}).items():
            rows[name] = time_step(make_step(make_mlp(sizes["width"], sizes["depth"], device)), x, y, *timing)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    return rows


def matmul_tflops(device, n: int, iters: int, dtype=torch.bfloat16) -> float:
    """TFLOP/s of an n x n by n x n matmul (2 n^3 flops), averaged over `iters` after warm-up."""
    g = torch.Generator().manual_seed(2)
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
    return 2 * n**3 / ((time.perf_counter() - start) / iters) / 1e12


def peak_for(device_name: str) -> float | None:
    """The dense BF16 datasheet peak of an SXM H100/H200, None for anything else."""
    if "PCIe" in device_name or "NVL" in device_name:
        return None  # other clocks and power limits: not the SXM figure
    return next((peak for key, peak in BF16_DENSE_PEAK_TFLOPS.items() if key in device_name), None)


def table(rows: dict) -> str:
    """The rows of run_modes as a text table, speed-ups against the first row."""
    base = next(iter(rows.values()))[0]
    lines = [f"{'mode':<26}{'step ms':>10}{'speed-up':>10}{'peak MiB':>10}"]
    for mode, (ms, peak) in rows.items():
        lines.append(f"{mode:<26}{ms:>10.3f}{base / ms:>9.2f}x{'n/a' if peak is None else f'{peak:.0f}':>10}")
    return "\n".join(lines)


def describe(device, sizes: dict) -> str:
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return (f"{name} | torch {torch.__version__} | Python {platform.python_version()} | MLP of "
            f"{sizes['depth']} x Linear({sizes['width']}, {sizes['width']}) + ReLU, batch {sizes['batch']}, "
            f"SGD, MSE; {sizes['warmup']} warm-up + {sizes['iters']} timed steps")


def arguments(argv=None, description: str = __doc__.split("\n\n")[0]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cpu", action="store_true", help="run the CPU version even if CUDA is available")
    parser.add_argument("--peak-tflops", type=float, help="dense BF16 peak of this device, if not H100/H200 SXM")
    parser.add_argument("--json", help="also write the results to this file")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, extra: dict | None = None) -> dict:
    """Print the table and the matmul line; return the results as plain data."""
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    sizes = GPU_SIZES if cuda else CPU_SIZES
    print(describe(device, sizes))
    if not cuda:
        print("(no CUDA device, or --cpu: tiny sizes, no TF32 and no peak-memory counter; "
              "the numbers only show that the code runs)")
    rows = run_modes(device, sizes, extra=extra)
    print("\n" + table(rows))
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    tflops = matmul_tflops(device, sizes["matmul_n"], sizes["matmul_iters"])
    peak = args.peak_tflops or (peak_for(name) if cuda else None)
    n = sizes["matmul_n"]
    print(f"\nbf16 matmul {n}x{n}x{n}: {tflops:.1f} TFLOP/s"
          + (f" = {100 * tflops / peak:.1f}% of {peak:.1f} TFLOP/s (dense BF16 peak, NVIDIA datasheet)"
             if peak else " (no datasheet peak known for this device; pass --peak-tflops)"))
    base = rows[MODES[0]][0]
    return {"device": name, "torch": torch.__version__, "cuda": cuda, "sizes": sizes,
            "modes": {m: {"step_ms": ms, "speedup_vs_fp32": base / ms, "peak_mib": pk}
                      for m, (ms, pk) in rows.items()},
            "bf16_matmul": {"n": n, "tflops": tflops, "peak_tflops": peak,
                            "fraction_of_peak": tflops / peak if peak else None}}


def write_json(path: str | None, result: dict) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)


def main(argv=None) -> int:
    args = arguments(argv)
    write_json(args.json, measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
