"""Hidden checks for lesson 07: bytes_per_param (2), stochastic_round_to_bf16 (5), kahan_adamw_step (5).

Every expected value is computed here, in the trusted process, from the real
mechanism:

- bytes_per_param: each recipe is built for real with grader.labs.memory
  (torch.optim optimizers, an FP32 master copy, a compensation buffer), one
  step is taken, and the bytes of the distinct storages it keeps are counted.
- stochastic_round_to_bf16: the contract fixes where the random bits come from
  (one torch.randint call on the learner's generator), so the output is checked
  bit for bit against the contract on seeded generators. Independently of the
  draw, every output must be one of x's two BF16 neighbours as torch's own
  round-to-nearest cast and torch.nextafter find them, and the mean of many
  draws must be x within a stated statistical bound.
- kahan_adamw_step: torch.optim.AdamW on an FP32 master copy, fed the same
  gradients, is the reference; the learner's BF16 param must stay within one
  BF16 ulp of it at every step, and param + comp within a quarter ulp.

Learner code runs in the worker under small drivers shipped with learner.run,
so each check costs one or two round trips.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from grader.checkkit import CheckFailed, draw, exercise, render
from grader.labs.memory import OPTIMIZERS, Recipe, TrainingRun

# -- bytes_per_param ---------------------------------------------------------------------

_measured: dict[Recipe, float] = {}


def measured_bytes_per_param(recipe: Recipe) -> float:
    """Bytes per parameter that a real training step with `recipe` keeps (cached)."""
    if recipe not in _measured:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.Tanh(), torch.nn.Linear(24, 6))
        run = TrainingRun(model, recipe)
        run.step(torch.randn(3, 12), torch.randn(3, 6))
        n = sum(p.numel() for p in run.params)
        _measured[recipe] = sum(run.state_bytes().values()) / n
    return _measured[recipe]


def _bytes_cause(recipe: dict, got) -> str:
    size = {"fp32": 4, "fp16": 2, "bf16": 2}[recipe["weights"]]
    states = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}[recipe["optimizer"]]
    base = 2 * size + (4 if recipe["master"] else 0) + (size if recipe["kahan"] else 0)
    if recipe["master"] and got == base + states * size:
        return ("with a master copy the optimizer updates the FP32 master, so torch.optim creates "
                "its state in FP32: 4 bytes per element, not the weights' size")
    if not recipe["master"] and size == 2 and states and got == base + states * 4:
        return ("without a master, torch.optim creates the state in the dtype of the weights it "
                "updates: 2 bytes per element for FP16/BF16 weights")
    if got == base - size + states * (4 if recipe["master"] else size):
        return ("one tensor of the weights' dtype is missing: each weight has a gradient of the "
                "same dtype" + (", and the Kahan buffer is one more" if recipe["kahan"] else ""))
    return ("add: the weights and their gradients (weights' dtype), an FP32 master if any, the "
            "optimizer's buffers (0, 1 or 2) in the dtype it updates, and the Kahan buffer if any")


def _check_recipes(learner, recipes: list[Recipe], checked: str) -> None:
    outcomes = learner.map("bytes_per_param", [(r.as_dict(),) for r in recipes])
    for recipe, out in zip(recipes, outcomes):
        if not out.ok:
            raise out.raised
        expected = measured_bytes_per_param(recipe)
        got = out.value
        if type(got) not in (int, float) or got != expected:
            cause = (_bytes_cause(recipe.as_dict(), got) if type(got) in (int, float)
                     else "return a Python int (the number of bytes per parameter)")
            raise CheckFailed(checked, f"bytes_per_param({render(recipe.as_dict())})",
                              int(expected), got, cause)


def _recipes(kahan: bool) -> list[Recipe]:
    return [Recipe(weights, master, optimizer, kahan) for weights in ("fp32", "fp16", "bf16")
            for master in (False, True) for optimizer in OPTIMIZERS]


@exercise("bytes_per_param", points=1)
def test_bytes_per_param_matches_measured_model_states(learner):
    """Every recipe without a Kahan buffer: the count equals the bytes a real torch.optim step keeps."""
    _check_recipes(learner, _recipes(kahan=False),
                   "bytes_per_param(recipe) equals the bytes per parameter measured on the recipe "
                   "built with torch.optim (weights, grads, master, optimizer state)")


@exercise("bytes_per_param", points=1)
def test_a_kahan_buffer_costs_the_weights_dtype_once_more(learner):
    """Every recipe with a Kahan buffer: one more tensor of the weights' dtype."""
    _check_recipes(learner, _recipes(kahan=True),
                   "bytes_per_param(recipe) with kahan=True equals the measured bytes, "
                   "compensation buffer included")


# -- stochastic_round_to_bf16 -------------------------------------------------------------

SR_DRIVER = '''
def __grader_07_round(cases):
    """Round each (seed, x) with a fresh generator; report the result and whether x changed."""
    out = []
    for seed, x in cases:
        kept = x.clone()
        result = stochastic_round_to_bf16(x, torch.Generator().manual_seed(seed))
        out.append((result, bool(torch.equal(x.view(torch.int32), kept.view(torch.int32)))))
    return out
'''


def contract_round(x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The contract's output for (x, seed), and the random numbers it drew."""
    r = torch.randint(0, 2**16, x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.int32)
    bits = x.view(torch.int32)
    truncated = bits & ~0xFFFF
    result = torch.where((bits & 0xFFFF) > r, truncated + 0x10000, truncated).view(torch.float32)
    return torch.where(torch.isnan(x), x, result).to(torch.bfloat16), r


def bf16_neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's round-to-nearest BF16 value of x, and the BF16 value on x's other side."""
    nearest = x.to(torch.bfloat16)
    towards = torch.where(nearest.float() < x, math.inf, -math.inf).to(torch.bfloat16)
    other = torch.where(nearest.float() == x, nearest, torch.nextafter(nearest, towards))
    return nearest, other


def _same_bf16(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.view(torch.int16) == b.view(torch.int16)) | (torch.isnan(a) & torch.isnan(b))


def _round_learner(learner, cases: list[tuple]) -> list:
    learner.run(SR_DRIVER)
    return learner.call("__grader_07_round", cases)


def _output_problem(x: torch.Tensor, result) -> str | None:
    if not isinstance(result, torch.Tensor):
        return f"return a torch.bfloat16 tensor, not {render(result)}"
    if result.dtype != torch.bfloat16:
        return (f"the result is {str(result.dtype).removeprefix('torch.')}: finish with "
                ".to(torch.bfloat16) (exact, since the low 16 bits are zero)")
    if tuple(result.shape) != tuple(x.shape):
        return f"the result has shape {list(result.shape)}; keep x's shape {list(x.shape)}"
    return None


def _element_text(x: float, bits: int) -> str:
    return f"x = {x!r} (FP32 bits 0x{bits & 0xFFFFFFFF:08X}, low 16 bits {bits & 0xFFFF})"


def _rounding_cause(x: float, bits: int, r: int, expected: float, got: float, nearest: float,
                    other: float) -> str:
    low = bits & 0xFFFF
    if math.isnan(x):
        return ("NaN must stay NaN: the bit trick turns a NaN whose payload sits in the low 16 bits "
                "into inf (or -0.0); put NaNs back with torch.where(torch.isnan(x), x, result)")
    if low == r and got != expected:
        return (f"here low == r == {r}: round away from zero only when low > r (strictly), so that "
                "exact BF16 values (low 0) never move and P(away) = low / 65536")
    if low == 0:
        return ("x is exactly a BF16 value (its low 16 bits are 0), so it must come back unchanged: "
                "with the rule low > r it never moves; check the comparison's direction")
    if got not in (nearest, other) and not (math.isnan(got) and math.isnan(expected)):
        return ("the result is not one of x's two BF16 neighbours: clear the low 16 bits to round "
                "towards zero, add 0x10000 to those bits to go one BF16 step away from zero")
    if got == nearest and expected != nearest:
        return ("this is round-to-nearest: every output must come from the rule low > r with "
                "r = torch.randint(0, 2**16, x.shape, generator=generator, dtype=torch.int32)")
    direction = "away from zero" if low > r else "towards zero"
    return (f"low = {low} and r = {r}, so the contract rounds {direction} here, and yours went the "
            "other way: draw r once, torch.randint(0, 2**16, x.shape, generator=generator, "
            "dtype=torch.int32), before any other draw, and round away from zero exactly where low > r")


def _compare_with_contract(cases: list[tuple], got: list, checked: str) -> None:
    for (seed, x), (result, untouched) in zip(cases, got):
        case = f"x = {render(x)} with torch.Generator().manual_seed({seed})"
        problem = _output_problem(x, result)
        expected, r = contract_round(x, seed)
        if problem:
            raise CheckFailed(checked, case, expected, result, problem)
        if not untouched:
            raise CheckFailed(checked, case, "x unchanged", "x was modified", show_values=False,
                              cause="build new tensors (bits & 0xFFFF, torch.where) instead of "
                                    "changing x or its int32 view in place")
        same = _same_bf16(expected, result)
        if bool(same.all()):
            continue
        i = int((~same).reshape(-1).nonzero()[0])
        xi = float(x.reshape(-1)[i])
        bits = int(x.reshape(-1).view(torch.int32)[i])
        nearest, other = (float(t.reshape(-1)[i]) for t in bf16_neighbours(x))
        exp_i, got_i = float(expected.reshape(-1)[i]), float(result.reshape(-1)[i])
        n_wrong = int((~same).sum())
        raise CheckFailed(checked, f"{case}: element {i} of {x.numel()}, {_element_text(xi, bits)}, "
                                   f"r = {int(r.reshape(-1)[i])}; {n_wrong} element(s) differ",
                          exp_i, got_i, _rounding_cause(xi, bits, int(r.reshape(-1)[i]), exp_i, got_i,
                                                        nearest, other))


def _random_floats(n: int, seed: int) -> torch.Tensor:
    """n float32 values from every part of the range: random bit patterns, ordinary, exact BF16."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randint(-2**31, 2**31, (n // 2,), generator=g, dtype=torch.int64).to(torch.int32)
    patterns = patterns.view(torch.float32)
    patterns = torch.where(torch.isfinite(patterns), patterns, torch.ones_like(patterns))
    ordinary = torch.randn(n // 4, generator=g) * 10.0 ** torch.randint(-6, 6, (n // 4,), generator=g)
    exact = torch.randn(n - n // 2 - n // 4, generator=g).to(torch.bfloat16).float()
    return torch.cat([patterns, ordinary, exact])


def _float32_lists():
    return st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=12)


@exercise("stochastic_round_to_bf16", points=2)
def test_matches_the_contract_bit_for_bit(learner, seed):
    """For seeded generators, every output bit equals the contract's (one randint call, low > r)."""
    drawn = draw(st.tuples(st.integers(0, 2**31 - 1), _float32_lists()), n=25, seed=seed, key="07.sr")
    cases = [(s, torch.tensor(values, dtype=torch.float32)) for s, values in drawn]
    cases += [(seed % 1000, _random_floats(2**17, seed)),            # low == r happens a few times
              (7, torch.tensor([[1.0, 1.00390625], [-1.001953125, 0.1]])),
              (11, _random_floats(60, seed + 1).reshape(3, 4, 5)),
              (3, torch.tensor(2.5))]
    _compare_with_contract(cases, _round_learner(learner, cases),
                           "stochastic_round_to_bf16(x, generator) equals the contract bit for bit: "
                           "r = torch.randint(0, 2**16, x.shape, generator=generator, dtype=torch.int32), "
                           "away from zero where (bits & 0xFFFF) > r")


@exercise("stochastic_round_to_bf16", points=1)
def test_every_output_is_one_of_the_two_bf16_neighbours(learner, seed):
    """Whatever the random draws: each output is x's BF16 round-to-nearest value or the one on x's other side."""
    cases = [(seed + k, _random_floats(4096, seed + 100 + k)) for k in range(4)]
    cases.append((5, torch.tensor([0.0, -0.0, 1.0, -2.0, 3.3895314e38, 1e-40, -1e-45])))
    got = _round_learner(learner, cases)
    checked = ("every output is one of x's two BF16 neighbours (torch's round-to-nearest cast, "
               "and torch.nextafter on x's other side); exact BF16 values are unchanged")
    for (s, x), (result, _) in zip(cases, got):
        case = f"x = {render(x)} with torch.Generator().manual_seed({s})"
        problem = _output_problem(x, result)
        if problem:
            raise CheckFailed(checked, case, "a torch.bfloat16 tensor shaped like x", result, problem)
        nearest, other = bf16_neighbours(x)
        ok = _same_bf16(result, nearest) | _same_bf16(result, other)
        if bool(ok.all()):
            continue
        i = int((~ok).reshape(-1).nonzero()[0])
        xi, bits = float(x.reshape(-1)[i]), int(x.reshape(-1).view(torch.int32)[i])
        exact = float(nearest.reshape(-1)[i]) == xi
        expected = (float(nearest.reshape(-1)[i]) if exact else
                    sorted({float(nearest.reshape(-1)[i]), float(other.reshape(-1)[i])}))
        cause = ("x is already a BF16 number (its low 16 bits are 0): it must come back unchanged; "
                 "round away from zero only where low > r, strictly" if exact else
                 "the result must be x truncated towards zero, or one BF16 step further from zero: "
                 "clear the low 16 bits of x.view(torch.int32), then add 0x10000 or not; a "
                 "negative x moves away from zero by adding to its bits, too")
        raise CheckFailed(checked, f"{case}: element {i}, {_element_text(xi, bits)}", expected,
                          float(result.reshape(-1)[i]), cause)


UNBIASED_VALUES = [1.0 + k / 16 * 2**-7 for k in (1, 3, 8, 13, 15)] + [
    -(1.0 + 5 / 16 * 2**-7), 0.1, -3.14159, 1e-30, 3.0e38, 2.0**-140, 1.0]
DRAWS = 2**14


@exercise("stochastic_round_to_bf16", points=1)
def test_the_average_of_many_roundings_is_x(learner, seed):
    """Unbiased: the mean of 16384 roundings of x is x, within 6 standard errors."""
    x = torch.tensor(UNBIASED_VALUES, dtype=torch.float32).repeat_interleave(DRAWS).reshape(-1, DRAWS)
    cases = [(seed % 100_000, x)]
    [(result, _)] = _round_learner(learner, cases)
    checked = (f"the mean of {DRAWS} stochastic roundings of x is x, within 6 standard errors "
               "(unbiased rounding)")
    problem = _output_problem(x, result)
    if problem:
        raise CheckFailed(checked, f"{DRAWS} copies of each x in {render(UNBIASED_VALUES)}",
                          "a torch.bfloat16 tensor shaped like x", result, problem)
    means = result.double().mean(dim=1)
    nearest, other = bf16_neighbours(x[:, 0])
    for j, value in enumerate(UNBIASED_VALUES):
        lo, hi = sorted((float(nearest[j]), float(other[j])))
        xv = float(torch.tensor(value, dtype=torch.float32))
        if math.isinf(hi):
            continue  # above BF16's largest value the upper neighbour is inf: no finite mean
        p = (xv - lo) / (hi - lo) if hi > lo else 0.0
        bound = 6 * (hi - lo) * math.sqrt(p * (1 - p) / DRAWS) + 1e-12 * abs(xv)
        mean = float(means[j])
        if not abs(mean - xv) <= bound:
            where = f"x = {xv!r}, between BF16 {lo!r} and {hi!r}; {DRAWS} draws, generator seed {seed % 100_000}"
            cause = ("rounding must go away from zero with probability low / 65536: "
                     "compare low > r with r uniform in [0, 65535]" if hi > lo else
                     "x is exactly a BF16 value: it must never move")
            if abs(mean - lo) < abs(mean - xv) / 4 or abs(mean - hi) < abs(mean - xv) / 4:
                cause = ("nearly every draw gave the same neighbour: this looks like rounding to "
                         "nearest or truncating; the probability must be the fraction low / 65536")
            raise CheckFailed(checked, where, f"mean within {bound:.3g} of {xv!r}", mean, cause)


@exercise("stochastic_round_to_bf16", points=1)
def test_nan_inf_zeros_and_the_top_of_the_range(learner):
    """NaN stays NaN (payloads in the low bits too), inf and signed zeros pass, overflow goes to +-inf."""
    nan_payloads = torch.tensor([0x7FC00000, 0x7F800001, 0x7F80FFFF, 0x7FFFFFFF, -0x00000001,
                                 -0x007F0001], dtype=torch.int32).view(torch.float32)
    specials = torch.tensor([math.inf, -math.inf, 0.0, -0.0, 3.4028235e38, -3.4028235e38,
                             1.4e-45, -1.4e-45])
    x = torch.cat([nan_payloads, specials]).repeat(64)
    cases = [(s, x) for s in range(4)]
    got = _round_learner(learner, cases)
    checked = ("NaN stays NaN, +-inf and +-0.0 are unchanged (sign included), and values beyond "
               "BF16's largest round to it or to inf")
    for (s, xs), (result, _) in zip(cases, got):
        case = f"x = {render(xs)} with torch.Generator().manual_seed({s})"
        problem = _output_problem(xs, result)
        if problem:
            raise CheckFailed(checked, case, "a torch.bfloat16 tensor shaped like x", result, problem)
        nearest, other = bf16_neighbours(xs)
        ok = _same_bf16(result, nearest) | _same_bf16(result, other)
        if bool(ok.all()):
            continue
        i = int((~ok).nonzero()[0])
        xi, bits = float(xs[i]), int(xs.view(torch.int32)[i])
        got_i = float(result[i])
        if math.isnan(xi):
            cause = ("NaN must stay NaN: the bit trick turns a NaN whose payload sits in the low 16 "
                     "bits into inf (or, when adding 0x10000 carries, into -0.0); put NaNs back "
                     "with torch.where(torch.isnan(x), x, result)")
            expected = math.nan
        elif xi == 0.0 or math.isinf(xi):
            cause = "zeros and infinities have low bits 0: they must come back unchanged, sign included"
            expected = xi
        else:
            cause = ("the result must be one of x's two BF16 neighbours (beyond BF16's largest "
                     "value, those are the largest value and inf)")
            expected = sorted({float(nearest[i]), float(other[i])})
        raise CheckFailed(checked, f"{case}: element {i}, {_element_text(xi, bits)}", expected, got_i, cause)


# -- kahan_adamw_step ---------------------------------------------------------------------

KAHAN_DRIVER = '''
def __grader_07_kahan(cases):
    """Run each (p0, grads, hyper) case; return per-step params and comps, and the final state."""
    runs = []
    for p0, grads, hyper in cases:
        param = p0.clone()
        state = {}
        params, comps = [], []
        for grad in grads:
            kahan_adamw_step(param, grad.clone(), state, **hyper)
            params.append(param.clone())
            comp = state.get("comp") if type(state) is dict else None
            comps.append(comp.clone() if isinstance(comp, torch.Tensor) else None)
        comps = torch.stack(comps) if all(isinstance(c, torch.Tensor) and c.shape == param.shape
                                          and c.dtype == torch.bfloat16 for c in comps) else None
        final = {}
        if type(state) is dict:
            for key, value in state.items():
                final[str(key)] = value if type(value) in (int, float, bool) or isinstance(value, torch.Tensor) \
                    else type(value).__name__
        runs.append((torch.stack(params), comps, final, param.dtype == torch.bfloat16))
    return runs
'''

_adamw_runs: dict[tuple, torch.Tensor] = {}


def adamw_master_run(p0: torch.Tensor, grads: torch.Tensor, hyper: dict) -> tuple[torch.Tensor, dict]:
    """torch.optim.AdamW on an FP32 copy of p0: the master after every step, and the final state."""
    key = (p0.view(torch.int16).numpy().tobytes(), grads.view(torch.int16).numpy().tobytes(),
           tuple(sorted(hyper.items())))
    if key not in _adamw_runs:
        master = torch.nn.Parameter(p0.float().clone())
        opt = torch.optim.AdamW([master], foreach=False, **hyper)
        path = []
        for grad in grads:
            master.grad = grad.float()
            opt.step()
            path.append(master.detach().clone())
        state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in opt.state[master].items()}
        _adamw_runs[key] = (torch.stack(path), state)
    return _adamw_runs[key]


def bf16_ulp(x: torch.Tensor) -> torch.Tensor:
    """The spacing of BF16 numbers in the binade of each |x| (2^-133 at the bottom)."""
    _, exponent = torch.frexp(x.abs())
    return torch.ldexp(torch.ones_like(x), (exponent - 8).clamp(min=-133))


def kahan_case(seed: int, scale_exp: int, lr_below: float, grad_exp: float, hyper: dict,
               n: int = 48, steps: int = 100) -> tuple:
    """Weights with magnitudes in [2^e, 2^(e+1)), lr = 2^(e - lr_below), gradients ~ 2^grad_exp."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    p0 = (signs * 2.0**scale_exp * (1 + torch.rand(n, generator=g))).to(torch.bfloat16)
    drift = torch.randn(1, n, generator=g)
    grads = ((torch.randn(steps, n, generator=g) + drift) * 2.0**grad_exp).to(torch.bfloat16)
    return p0, grads, {"lr": 2.0 ** (scale_exp - lr_below), **hyper}


def _hyper_text(hyper: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in hyper.items())


def _run_kahan(learner, cases: list[tuple]) -> list:
    learner.run(KAHAN_DRIVER)
    return learner.call("__grader_07_kahan", cases)


def _variant_step(param, grad, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                  mistake: str = ""):
    """The contract's step, or one named mistake in it, to diagnose a learner's trajectory."""
    beta1, beta2 = betas
    if not state:
        state.update(step=0, m=torch.zeros_like(param, dtype=torch.float32),
                     v=torch.zeros_like(param, dtype=torch.float32), comp=torch.zeros_like(param))
    state["step"] += 1
    t = state["step"]
    g, w = grad.float(), param.float()
    if mistake == "l2":
        g = g + weight_decay * w
    state["m"] = beta1 * state["m"] + (1 - beta1) * g
    state["v"] = beta2 * state["v"] + (1 - beta2) * g * g
    c1, c2 = (1.0, 1.0) if mistake == "no bias correction" else (1 - beta1**t, 1 - beta2**t)
    if mistake == "eps inside":
        denom = (state["v"] / c2 + eps).sqrt()
    else:
        denom = state["v"].sqrt() / math.sqrt(c2) + eps
    decay = 0.0 if mistake == "l2" else weight_decay
    delta = -lr * decay * w - lr / c1 * state["m"] / denom
    u = (state["comp"].float() if mistake != "no compensation" else 0.0) + delta
    new = (w + u).to(torch.bfloat16)
    lost = (new.float() - w) - u if mistake == "compensation sign" else u - (new.float() - w)
    state["comp"] = lost.to(torch.bfloat16)
    param.copy_(new)


VARIANTS = {
    "no compensation": "rounding w + delta to BF16 without the compensation: every update below "
                       "half an ulp is lost. Add comp to the update (u = comp + delta) and keep what "
                       "the rounding lost: comp = bf16(u - (new - w))",
    "compensation sign": "the compensation has the wrong sign: comp is what you meant to apply minus "
                         "what was applied, u - (new - w), not (new - w) - u",
    "no bias correction": "Adam's bias correction is missing: divide exp_avg by 1 - beta1**t and "
                          "exp_avg_sq by 1 - beta2**t, with t counting from 1",
    "eps inside": "eps goes after the square root: sqrt(exp_avg_sq) / sqrt(1 - beta2**t) + eps",
    "l2": "weight decay was added to the gradient (Adam with L2). AdamW decays the weight directly: "
          "delta includes -lr * weight_decay * w, and the moments see only the gradient",
}


def _diagnose(p0, grads, hyper, got_params: torch.Tensor) -> str | None:
    """The named mistake whose trajectory the learner's follows, if any."""
    for mistake, cause in VARIANTS.items():
        param, state = p0.clone(), {}
        path = []
        for grad in grads:
            _variant_step(param, grad, state, mistake=mistake, **hyper)
            path.append(param.clone())
        path = torch.stack(path).float()
        ulp = bf16_ulp(path)
        if bool(((got_params.float() - path).abs() <= ulp).all()):
            return cause
    return None


def _stuck_cause(p0: torch.Tensor, params: torch.Tensor, comps) -> str | None:
    """Why param never moved: not written in place, or no compensation; None if it moved."""
    if not torch.equal(params[-1], p0):
        return None
    if comps is not None and bool((comps[-1] != 0).any()):
        return ("param never changed, though comp holds the updates: write the new value into the "
                "tensor you were given, param.copy_(new); `param = new` only rebinds a local name")
    return VARIANTS["no compensation"] + ("; and write the result into param in place, "
                                          "param.copy_(new)")


def _check_tracking(learner, cases: list[tuple], checked: str, tolerance: float, on_sum: bool) -> None:
    got = _run_kahan(learner, cases)
    for (p0, grads, hyper), (params, comps, final, still_bf16) in zip(cases, got):
        steps = grads.shape[0]
        case = (f"param0 = {render(p0)} ({p0.numel()} BF16 weights), {steps} steps of drawn BF16 "
                f"gradients (first {render(grads[0])}), {_hyper_text(hyper)}")
        if not isinstance(params, torch.Tensor) or params.dtype != torch.bfloat16 or not still_bf16:
            raise CheckFailed(checked, case, "param stays a torch.bfloat16 tensor", render(params),
                              cause="update param in place with param.copy_(new); its dtype stays bfloat16")
        master, _ = adamw_master_run(p0, grads, hyper)
        if on_sum:
            if comps is None:
                raise CheckFailed(checked, case, "state['comp']: a bfloat16 tensor shaped like param",
                                  render(final.get("comp")),
                                  cause="keep the compensation in state['comp'], a torch.bfloat16 "
                                        "tensor shaped like param, after every step")
            values = params.float() + comps.float()
        else:
            values = params.float()
        ulp = bf16_ulp(master)
        error = (values - master).abs() / ulp
        if bool((error <= tolerance).all()):
            continue
        flat = int(error.reshape(-1).argmax())
        step, i = divmod(flat, p0.numel())
        what = "param + comp" if on_sum else "param"
        where = (f"{case}. Step {step + 1}, element {i}: the worst of all steps "
                 f"({float(error.reshape(-1)[flat]):.3g} ulp off; 1 ulp = {float(ulp[step, i]):.3g} here)")
        expected = {"master (torch.optim.AdamW, FP32)": float(master[step, i]),
                    f"{what} allowed within": f"{tolerance:g} ulp"}
        cause = _stuck_cause(p0, params, comps) or _diagnose(p0, grads, hyper, params)
        cause = cause or (
            "compute delta in float32 exactly as the contract says (AdamW with bias correction, eps "
            "after the square root, decoupled weight decay on the current weight), then add comp "
            "to it before rounding, and keep in comp what the rounding lost")
        raise CheckFailed(checked, where, expected, float(values[step, i]), cause)


def _tracking_cases(seed: int, key: str, hypers, top: int) -> list[tuple]:
    """Weights near +-2^e for e up to `top`; lr 2^9 to 2^14 times smaller than the weights."""
    specs = draw(st.tuples(st.integers(0, 2**30), st.integers(-10, top), st.floats(9.0, 14.0),
                           st.floats(-24.0, 0.0), hypers), n=8, seed=seed, key=key)
    return [kahan_case(*spec) for spec in specs]


_NO_DECAY = st.just({"weight_decay": 0.0})
_DRAWN_HYPER = st.fixed_dictionaries({
    "betas": st.sampled_from([(0.9, 0.999), (0.8, 0.99), (0.5, 0.9), (0.95, 0.98)]),
    "eps": st.sampled_from([1e-8, 1e-6, 1e-3]),
    "weight_decay": st.sampled_from([0.01, 0.1, 0.5]),
})


@exercise("kahan_adamw_step", points=1)
def test_state_keeps_fp32_moments_and_a_bf16_compensation(learner, seed):
    """After 3 steps: step == 3, exp_avg and exp_avg_sq are FP32 and equal AdamW's, comp is BF16, param in place."""
    p0, grads, hyper = kahan_case(seed, 0, 3.0, -4.0, {"weight_decay": 0.1}, n=16, steps=3)
    [(params, _, final, _)] = _run_kahan(learner, [(p0, grads, hyper)])
    _, reference = adamw_master_run(p0, grads, hyper)
    checked = ("after 3 calls, state holds 'step' == 3 (int), 'exp_avg' and 'exp_avg_sq' (float32, "
               "equal to torch.optim.AdamW's) and 'comp' (bfloat16), and param has moved")
    case = f"param0 = {render(p0)}, 3 steps, {_hyper_text(hyper)}"
    kinds = {k: (str(v.dtype).removeprefix("torch.") if isinstance(v, torch.Tensor) else type(v).__name__)
             for k, v in final.items()}
    wanted = {"step": "int", "exp_avg": "float32", "exp_avg_sq": "float32", "comp": "bfloat16"}
    missing = {k: v for k, v in wanted.items() if kinds.get(k) != v}
    if missing:
        raise CheckFailed(checked, case, wanted, kinds,
                          cause="create the state on the first call: step 0 (a Python int), "
                                "torch.zeros_like(param, dtype=torch.float32) for both moments and "
                                "torch.zeros_like(param) (bfloat16) for comp")
    if final["step"] != 3:
        raise CheckFailed(checked, case, 3, final["step"],
                          cause="add 1 to state['step'] on every call, before the bias correction")
    for name in ("exp_avg", "exp_avg_sq"):
        mine, ref = final[name], reference[name]
        scale = float(ref.abs().max())
        if mine.shape != ref.shape or not torch.allclose(mine, ref, rtol=1e-4, atol=1e-6 * scale):
            cause = ("exp_avg = beta1 * exp_avg + (1 - beta1) * g, with g = grad.float()" if name == "exp_avg"
                     else "exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g, with g = grad.float()")
            l2, weights = {}, p0.clone()
            for grad in grads:
                _variant_step(weights, grad, l2, mistake="l2", **hyper)
            if mine.shape == ref.shape and torch.allclose(mine, l2["m" if name == "exp_avg" else "v"], rtol=1e-3):
                cause = VARIANTS["l2"]
            raise CheckFailed(checked, case + f", then state[{name!r}]", ref, mine, cause)
    if torch.equal(params[-1], p0):
        raise CheckFailed(checked, case, "param changed (lr is large here)", render(params[-1]),
                          cause="write the new value into param with param.copy_(new): "
                                "`param = new` only rebinds a local name")


@exercise("kahan_adamw_step", points=2)
def test_tracks_adamw_on_an_fp32_master_within_one_ulp(learner, seed):
    """Updates far below half an ulp: param stays within 1 BF16 ulp of AdamW's FP32 master at every step."""
    cases = _tracking_cases(seed, "07.kahan.track", _NO_DECAY, top=6)
    _check_tracking(learner, cases, "param stays within 1 BF16 ulp of torch.optim.AdamW's FP32 master "
                                    "at every step (same initial weights, same gradients)",
                    tolerance=1.0, on_sum=False)


@exercise("kahan_adamw_step", points=1)
def test_param_plus_comp_is_the_master_within_a_quarter_ulp(learner, seed):
    """The pair (param, comp) carries the master: param + comp within 1/4 ulp at every step."""
    cases = _tracking_cases(seed, "07.kahan.track", _NO_DECAY, top=6)
    _check_tracking(learner, cases, "param + comp stays within 1/4 BF16 ulp of torch.optim.AdamW's "
                                    "FP32 master at every step", tolerance=0.25, on_sum=True)


@exercise("kahan_adamw_step", points=1)
def test_weight_decay_betas_and_eps_follow_adamw(learner, seed):
    """Drawn betas, eps and weight decay: param still within 1 ulp of AdamW's FP32 master."""
    cases = _tracking_cases(seed, "07.kahan.hyper", _DRAWN_HYPER, top=0)  # lr * wd * steps <= 0.1
    _check_tracking(learner, cases, "with drawn betas, eps and weight_decay, param stays within 1 BF16 "
                                    "ulp of torch.optim.AdamW's FP32 master at every step",
                    tolerance=1.0, on_sum=False)
