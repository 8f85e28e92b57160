"""Self-checks for lesson 07, where the bytes go: bytes_per_param, stochastic rounding, Kahan AdamW.

Each table compares the learner's function with the real thing, computed here in
the notebook's kernel: bytes measured on recipes built with torch.optim
(grader.labs.memory), BF16 neighbours from torch's own cast and torch.nextafter,
and torch.optim.AdamW on an FP32 master copy. The one hard-coded list is the
output of the stochastic-rounding contract for seed 7, which any correct
implementation reproduces on any machine (torch's CPU generator is deterministic).
"""

from __future__ import annotations

import math

import torch

from grader.labs.memory import Recipe, TrainingRun
from grader.selfcheck.core import SelfCheck

__all__ = ["check_bytes_per_param", "check_stochastic_round_to_bf16", "check_kahan_adamw_step"]


# -- bytes_per_param -----------------------------------------------------------------------

def _measured_bytes(recipe: Recipe) -> float:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 8))
    run = TrainingRun(model, recipe)
    run.step(torch.randn(4, 16), torch.randn(4, 8))
    n = sum(p.numel() for p in run.params)
    return sum(run.state_bytes().values()) / n


def check_bytes_per_param(bytes_per_param) -> None:
    with SelfCheck("bytes_per_param") as sc:
        cases = (("FP32 + Adam", Recipe("fp32"), "4 + 4 + 2 x 4: weights, grads, two FP32 moments"),
                 ("BF16 + FP32 master + Adam", Recipe("bf16", master=True),
                  "the moments follow the master (FP32), not the BF16 weights"),
                 ("pure BF16 + SGD with momentum", Recipe("bf16", optimizer="momentum"),
                  "one momentum buffer, in the weights' dtype when there is no master"),
                 ("FP16 + Kahan buffer + SGD", Recipe("fp16", optimizer="sgd", kahan=True),
                  "plain SGD keeps no state; the Kahan buffer has the weights' dtype"))
        for label, recipe, cause in cases:
            got = sc.call(bytes_per_param, recipe.as_dict())
            expected = int(_measured_bytes(recipe))
            sc.compare(f"{label}: measured {expected} B/param", expected, got, cause=cause)
        sc.compare("returns a Python int", "int", type(got).__name__,
                   cause="add up ints; return int(total) if you used floats")


# -- stochastic_round_to_bf16 --------------------------------------------------------------

SR_INPUT = [1.0, 1.001953125, 1.00390625, 1.005859375, -1.001953125, -1.005859375, 0.1, -3.0]
SR_SEED = 7
SR_EXPECTED = [1.0, 1.0, 1.0, 1.0078125, -1.0, -1.0, 0.10009765625, -3.0]  # the contract, seed 7


def _neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x's two BF16 neighbours: torch's round-to-nearest cast, and the next BF16 value past x."""
    nearest = x.to(torch.bfloat16)
    towards = torch.where(nearest.float() < x, math.inf, -math.inf).to(torch.bfloat16)
    other = torch.where(nearest.float() == x, nearest, torch.nextafter(nearest, towards))
    return nearest, other


def _floats(t) -> list:
    return [float(v) for v in t.float().reshape(-1)] if isinstance(t, torch.Tensor) else t


def check_stochastic_round_to_bf16(stochastic_round_to_bf16) -> None:
    with SelfCheck("stochastic_round_to_bf16") as sc:
        x = torch.tensor(SR_INPUT)
        kept = x.clone()
        got = sc.call(stochastic_round_to_bf16, x, torch.Generator().manual_seed(SR_SEED))
        sc.compare("returns torch.bfloat16", "torch.bfloat16", str(getattr(got, "dtype", type(got).__name__)),
                   cause="finish with .to(torch.bfloat16); the low 16 bits are zero, so it is exact")
        sc.compare("keeps x's shape", list(x.shape), list(getattr(got, "shape", [])),
                   cause="work element-wise on x.view(torch.int32); do not flatten or sum")
        sc.compare("x is not modified", True, bool(torch.equal(x, kept)),
                   cause="use out-of-place operations (bits & ..., torch.where), not x.copy_ or bits &= ...")
        nearest, other = _neighbours(x)
        values = torch.as_tensor(got).float() if isinstance(got, torch.Tensor) else torch.full_like(x, math.nan)
        ok = bool(((values == nearest.float()) | (values == other.float())).all())
        sc.compare("every output is one of x's two BF16 neighbours", True, ok,
                   cause="round towards zero (clear the low 16 bits) or one BF16 step away from zero "
                         "(add 0x10000 to the truncated bits); nothing else")
        sc.compare("exact BF16 values (1.0, -3.0) pass through", [1.0, -3.0],
                   [_floats(got)[0], _floats(got)[7]],
                   cause="when low == 0, low > r is never true: make sure you compare with >, not >=")
        sc.compare("seed 7 gives the contract's output", SR_EXPECTED, _floats(got),
                   cause="draw r = torch.randint(0, 2**16, x.shape, generator=generator, dtype=torch.int32) "
                         "once, and round away from zero exactly where (bits & 0xFFFF) > r")
        again = sc.call(stochastic_round_to_bf16, x, torch.Generator().manual_seed(SR_SEED))
        sc.compare("the same seed gives the same output", _floats(got), _floats(again),
                   cause="take every random number from `generator`, never from the global RNG")
        special = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0])
        special = torch.cat([special, torch.tensor([0x7F80FFFF], dtype=torch.int32).view(torch.float32)])
        out = _floats(sc.call(stochastic_round_to_bf16, special, torch.Generator().manual_seed(0)))
        shown = ["nan" if isinstance(v, float) and math.isnan(v) else v for v in out]
        sc.compare("NaN (also one with a low payload), inf and signed zeros", 
                   ["nan", math.inf, -math.inf, 0.0, -0.0, "nan"], shown,
                   cause="put NaNs back with torch.where(torch.isnan(x), x, result): the bit trick "
                         "turns a NaN whose payload sits in the low bits into inf")
        sc.compare("-0.0 keeps its sign", True, len(out) > 4 and math.copysign(1.0, out[4]) < 0,
                   cause="work on the bit pattern: -0.0 has only its sign bit set, so low == 0")
        quarter = torch.full((8192,), 1.001953125)          # 1 + a quarter of an ulp
        draws = sc.call(stochastic_round_to_bf16, quarter, torch.Generator().manual_seed(3))
        mean = float(torch.as_tensor(draws).double().mean()) if isinstance(draws, torch.Tensor) else math.nan
        sc.close("mean of 8192 roundings of 1 + ulp/4 is about 1 + ulp/4", 1.001953125, mean, rel=4e-4,
                 cause="round away from zero with probability low / 65536: compare low > r with r "
                       "uniform in [0, 65535]")


# -- kahan_adamw_step ----------------------------------------------------------------------

def _bf16_ulp(x: torch.Tensor) -> torch.Tensor:
    """The spacing of BF16 numbers in the binade of each |x| (2^-133 at the bottom)."""
    _, exponent = torch.frexp(x.abs())
    return torch.ldexp(torch.ones_like(x), (exponent - 8).clamp(min=-133))


def check_kahan_adamw_step(kahan_adamw_step) -> None:
    with SelfCheck("kahan_adamw_step") as sc:
        p0 = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.bfloat16)
        param, state = p0.clone(), {}
        master = torch.nn.Parameter(p0.float())
        opt = torch.optim.AdamW([master], lr=1e-4, weight_decay=0.01, foreach=False)
        grads = [torch.tensor([-1.0, 0.5, -0.25, 2.0], dtype=torch.bfloat16) * (1 + (k % 3)) for k in range(60)]
        worst_param = worst_sum = 0.0
        for k, grad in enumerate(grads):
            sc.call(kahan_adamw_step, param, grad, state, 1e-4, weight_decay=0.01)
            master.grad = grad.float()
            opt.step()
            if k == 0:
                kinds = {key: str(getattr(state.get(key), "dtype", type(state.get(key)).__name__))
                         for key in ("step", "exp_avg", "exp_avg_sq", "comp")} if isinstance(state, dict) else {}
                sc.compare("state after one step: types", {"step": "int", "exp_avg": "torch.float32",
                           "exp_avg_sq": "torch.float32", "comp": "torch.bfloat16"}, kinds,
                           cause="fill an empty state with step 0, FP32 zeros for the moments and BF16 zeros "
                                 "for comp (torch.zeros_like(param, dtype=...))")
            ulp = _bf16_ulp(master.detach())
            worst_param = max(worst_param, float(((param.float() - master.detach()).abs() / ulp).max()))
            comp = state.get("comp") if isinstance(state, dict) else None
            if isinstance(comp, torch.Tensor):
                gap = (param.float() + comp.float() - master.detach()).abs() / ulp
                worst_sum = max(worst_sum, float(gap.max()))
            else:
                worst_sum = math.inf
        sc.compare("state['step'] counts the calls", 60, state.get("step") if isinstance(state, dict) else None,
                   cause="increment state['step'] once per call, before the bias correction")
        sc.compare("param moved (each update is below half an ulp)", True, not torch.equal(param, p0),
                   cause="update param in place with param.copy_(new); `param = new` is lost when the "
                         "function returns. Without comp, updates this small are rounded away.")
        sc.row("param within 1 ulp of torch.optim.AdamW's FP32 master, every step", "within 1 ulp",
               _ulps(worst_param, 1.0), worst_param <= 1.0,
               cause="compute the AdamW update in float32 exactly as the contract says (bias correction, "
                     "eps after the square root, decoupled weight decay), then add comp to it")
        sc.row("param + comp within 1/4 ulp of the master", "within 0.25 ulp", _ulps(worst_sum, 0.25),
               worst_sum <= 0.25,
               cause="comp must hold what the rounding lost: bf16(u - (new - w)), with u = comp + delta")


def _ulps(worst: float, allowed: float) -> str:
    """'within ...' when the bound holds (the exact figure varies in its last digits between CPUs)."""
    return f"within {allowed:g} ulp" if worst <= allowed else f"{worst:.2g} ulp off"
