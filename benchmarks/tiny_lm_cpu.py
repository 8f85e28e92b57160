"""Lesson 08's model on this CPU: step time per recipe, anomaly mode, and torch.compile.

    .venv/bin/python benchmarks/tiny_lm_cpu.py              # eager recipes and anomaly mode (~1 min)
    .venv/bin/python benchmarks/tiny_lm_cpu.py --compile    # also torch.compile (minutes on a CPU)
    ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/tiny_lm_cpu.py   # as on a CPU without BF16 units

One thread, as in the lesson. Every step is the lesson's training step
(tiny_lm.train's loop body: autocast forward, scaled backward, unscale, clip,
AdamW step, scaler update) on batches of 8 windows of 64 bytes. Times are the
median of the timed steps after warm-up steps. "native" runs PyTorch's own CPU
kernels; "emulated" runs the lesson's dispatch_modes.emulate_matmuls(dtype).
The compile rows time the first call of a torch.compile'd model (tracing,
Inductor code generation and the C++ compiler) with an empty Inductor cache,
then the median step after it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch

from grader.labs import tiny_lm
from grader.labs.dispatch_modes import emulate_matmuls

RECIPES = {  # name: (autocast dtype, emulate its matmuls)
    "FP32": (None, False),
    "BF16 native": (torch.bfloat16, False),
    "BF16 emulated": (torch.bfloat16, True),
    "FP16 native": (torch.float16, False),
    "FP16 emulated": (torch.float16, True),
}


def make_step(model, corpus, dtype, emulate, seed=1):
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
    generator = torch.Generator().manual_seed(seed)

    def step():
        x, y = tiny_lm.get_batch(corpus, 8, 64, generator)
        optimizer.zero_grad(set_to_none=True)
        with emulate_matmuls(dtype, enabled=emulate):
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = model(x, y)
            scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()

    return step


def median_ms(step, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    corpus = tiny_lm.build_corpus()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "all")
    print(f"Python {platform.python_version()} | torch {torch.__version__} | "
          f"{platform.machine()} | ONEDNN_MAX_CPU_ISA={isa} | load average {os.getloadavg()[0]:.1f}")
    print(f"{'recipe':<26}{'ms per step':>12}")
    eager = {}
    for name, (dtype, emulate) in RECIPES.items():
        step = make_step(tiny_lm.make_model(0), corpus, dtype, emulate)
        eager[name] = median_ms(step, warmup=2, iters=args.iters)
        print(f"{name:<26}{eager[name]:>12.1f}", flush=True)
    print(f"per step, relative to FP32: " + ", ".join(
        f"{name} {ms / eager['FP32']:.1f}x" for name, ms in eager.items() if name != "FP32"))

    batch = tiny_lm.get_batch(corpus, 8, 64, torch.Generator().manual_seed(123))
    plain, anomaly = tiny_lm.anomaly_cost(tiny_lm.make_model(0), batch)
    print(f"forward + backward: {plain:.1f} ms plain, {anomaly:.1f} ms with detect_anomaly "
          f"({anomaly / plain:.1f}x)")

    if args.compile:
        # A cold cache: Inductor would otherwise reuse kernels compiled by an earlier run.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
        for name in ("BF16 native", "FP16 native"):
            dtype, emulate = RECIPES[name]
            model = tiny_lm.make_model(0)
            compiled = torch.compile(model)
            step = make_step(compiled, corpus, dtype, emulate)
            start = time.perf_counter()
            step()
            first = time.perf_counter() - start
            steady = median_ms(step, warmup=1, iters=args.iters)
            print(f"torch.compile, {name}: first step {first:.1f} s, then {steady:.1f} ms per step "
                  f"(eager {eager[name]:.1f} ms)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
