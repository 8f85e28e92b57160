"""Hidden checks for lesson 10, mixed precision across processes.

simulated_all_reduce is compared, bit for bit, with gloo's own all-reduce. The
trusted process runs it for real: one ProcessGroupGloo per simulated rank, each
in a thread, talking over the loopback interface (no worker processes, no
network). Cases are grouped by world size so that each group is built once.

sharded_scaler_step runs in the worker under a driver that plays the process
group: it hands the learner an all_reduce that sums one tensor per rank and logs
every call. Expected values come from one real torch.amp.GradScaler("cpu") per
rank, which unscales that rank's gradients and is then updated on the
all-reduced found_inf, as ShardedGradScaler does after its all-reduce.
"""

from __future__ import annotations

import datetime
import math
import random
import threading

import numpy as np
import torch
import torch.distributed as dist
from hypothesis import strategies as st

from grader.checkkit import CheckFailed, draw, exercise, render, same

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
BITS = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}

# --- the reference: gloo's all-reduce, run in this process ------------------------------------


def _gloo_group_run(n: int, inputs: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """All-reduce inputs[k][r] (rank r's tensor of case k) for every case k; rank 0's results."""
    store = dist.HashStore()
    results: list[list] = [[None] * len(inputs) for _ in range(n)]
    errors: list[BaseException] = []

    def rank_main(rank: int) -> None:
        try:
            options = dist.ProcessGroupGloo._Options()
            options._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")]
            options._timeout = datetime.timedelta(seconds=20)
            group = dist.ProcessGroupGloo(dist.PrefixStore(f"n{n}", store), rank, n, options)
            for k, tensors in enumerate(inputs):
                x = tensors[rank].clone()
                if x.numel():
                    group.allreduce([x]).wait()
                results[rank][k] = x
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=rank_main, args=(r,), daemon=True) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError(f"gloo reference failed: {errors[0] if errors else 'timed out'}")
    return results[0]


def ring_model(tensors, dtype, start=-1, step=-1, chunk=None, cast_first=True, round_each=True):
    """gloo's ring as a formula, with knobs that reproduce common mistakes (for diagnosis)."""
    xs = [t.to(dtype) if cast_first else t.float() for t in tensors]
    n, length = len(xs), xs[0].numel()
    out = torch.empty(length, dtype=dtype)
    size = chunk(length, n) if chunk else 2 * math.ceil(length / (2 * n))
    hop_dtype = dtype if round_each else torch.float32
    for c in range(n):
        lo, hi = min(c * size, length), min((c + 1) * size, length)
        total = xs[(c + start) % n][lo:hi]
        for k in range(1, n):
            total = (total.float() + xs[(c + start + k * step) % n][lo:hi].float()).to(hop_dtype)
        out[lo:hi] = total.to(dtype)
    return out


def sequential_model(tensors, dtype):
    total = tensors[0].to(dtype)
    for t in tensors[1:]:
        total = (total.float() + t.to(dtype).float()).to(dtype)
    return total.clone()


_gloo_cache: dict[tuple, torch.Tensor] = {}


def _key(tensors, dtype_name):
    return (dtype_name, tuple(t.numpy().tobytes() for t in tensors))


def gloo_all_reduce(cases: list[tuple]) -> list[torch.Tensor]:
    """gloo's result for each (tensors, dtype name) case; cached across submissions."""
    todo: dict[int, list] = {}
    for tensors, name in cases:
        if _key(tensors, name) not in _gloo_cache:
            todo.setdefault(len(tensors), []).append((tensors, name))
    for n, group in todo.items():
        inputs = [[t.to(DTYPES[name]) for t in tensors] for tensors, name in group]
        for (tensors, name), result in zip(group, _gloo_group_run(n, inputs)):
            _gloo_cache[_key(tensors, name)] = result
    return [_gloo_cache[_key(tensors, name)] for tensors, name in cases]


# --- comparing tensors ---------------------------------------------------------------------


def same_bits(expected: torch.Tensor, got) -> bool:
    """Same dtype, shape and bit pattern; any NaN equals any NaN."""
    if not isinstance(got, torch.Tensor) or got.dtype != expected.dtype or got.shape != expected.shape:
        return False
    e, g = expected.reshape(-1), got.reshape(-1)
    both_nan = torch.isnan(e.float()) & torch.isnan(g.float())
    return bool((both_nan | (e.view(BITS[e.dtype]) == g.view(BITS[e.dtype]))).all())


def first_difference(expected: torch.Tensor, got: torch.Tensor) -> int:
    e, g = expected.reshape(-1), got.reshape(-1)
    differs = ~((torch.isnan(e.float()) & torch.isnan(g.float()))
                | (e.view(BITS[e.dtype]) == g.view(BITS[e.dtype])))
    return int(differs.nonzero()[0])


MISTAKES = [
    ("ranks added in rank order 0, 1, ..., n-1 in every chunk", lambda t, d: sequential_model(t, d)),
    ("one rounding at the end: the sum was accumulated in float32 and rounded once; gloo rounds "
     "after every addition", lambda t, d: ring_model(t, d, round_each=False)),
    ("chunks of ceil(L / n) elements (torch.chunk); gloo cuts 2n segments of ceil(L / 2n) and "
     "gives each chunk two of them", lambda t, d: ring_model(t, d, chunk=lambda L, n: math.ceil(L / n))),
    ("chunk c starts at rank c and goes up; it starts at rank (c - 1) % n and goes down",
     lambda t, d: ring_model(t, d, start=0, step=1)),
    ("the ring runs the wrong way: chunk c starts at rank (c + 1) % n and goes up",
     lambda t, d: ring_model(t, d, start=1, step=1)),
    ("chunk c starts at rank c and goes down; it starts at rank (c - 1) % n",
     lambda t, d: ring_model(t, d, start=0, step=-1)),
    ("the ranks' tensors were not cast to dtype before adding: every rank sends dtype values",
     lambda t, d: ring_model(t, d, cast_first=False)),
]


def diagnose_all(failures: list[tuple]) -> str:
    """The one mistake that explains every failing (tensors, dtype, got) case, if there is one."""
    tensors, dtype, got = failures[0]
    if all(isinstance(g, torch.Tensor) and g.dtype == d and g.shape == t[0].shape for t, d, g in failures):
        for cause, model in MISTAKES:
            if all(same_bits(model(t, d), g) for t, d, g in failures):
                return cause
    return diagnose(tensors, dtype, got)


def diagnose(tensors, dtype, got) -> str:
    if not isinstance(got, torch.Tensor):
        return f"return a torch.Tensor, not {type(got).__name__}"
    if got.dtype != dtype:
        return f"the result must have dtype {dtype} (got {got.dtype}): return the sum in dtype"
    if got.shape != tensors[0].shape:
        return f"the result must have the inputs' shape {tuple(tensors[0].shape)}"
    for cause, model in MISTAKES:
        if same_bits(model(tensors, dtype), got):
            return cause
    return ("round after every addition ((a.float() + b.float()).to(dtype)), and sum chunk c "
            "from rank (c - 1) % n down to rank c, with seg = ceil(L / 2n)")


def describe(tensors, name, i: int | None = None) -> str:
    n, length = len(tensors), tensors[0].numel()
    text = f"{n} rank(s), L = {length}, dtype torch.{name}"
    if i is not None:
        seg = math.ceil(length / (2 * n))
        chunk = i // (2 * seg)
        values = [render(float(t[i])) for t in tensors]
        text += (f"; element {i} (chunk {chunk}) differs first; the ranks' float32 values there: "
                 f"{', '.join(values)}")
    return text


# --- drawn inputs ---------------------------------------------------------------------------

PROFILES = ("gradients", "wide", "cancelling", "ties")


def make_tensors(n: int, length: int, profile: str, seed: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    if profile == "gradients":
        shared = rng.standard_normal(length)
        rows = [(shared + 0.5 * rng.standard_normal(length)) * 1e-3 for _ in range(n)]
    elif profile == "wide":
        rows = [rng.standard_normal(length) * 2.0 ** rng.integers(-30, 30, length) for _ in range(n)]
    elif profile == "cancelling":
        base = rng.standard_normal(length) * 100
        rows = [base * (-1) ** r + rng.standard_normal(length) for r in range(n)]
    else:  # values on BF16/FP16 rounding ties: 1 + k * 2^-9
        rows = [1.0 + rng.integers(0, 8, length) * 2.0**-9 * rng.choice([-1, 1], length) for _ in range(n)]
    return [torch.from_numpy(np.asarray(row, dtype=np.float32)) for row in rows]


reduce_specs = st.tuples(
    st.integers(min_value=1, max_value=8),
    st.one_of(st.integers(min_value=0, max_value=40), st.integers(min_value=41, max_value=400)),
    st.sampled_from(sorted(DTYPES)),
    st.sampled_from(PROFILES),
    st.integers(min_value=0, max_value=2**32 - 1),
)

REDUCE_DRIVER = '''
def __grader_10_reduce(tensors, dtype_name, algorithm):
    import torch as __torch
    return simulated_all_reduce(tensors, getattr(__torch, dtype_name), algorithm)


def __grader_10_reduce_kept(tensors, dtype_name):
    import torch as __torch
    kept = [t.clone() for t in tensors]
    out = simulated_all_reduce(tensors, getattr(__torch, dtype_name))
    untouched = all(a.dtype == b.dtype and a.shape == b.shape and
                    bool(((a == b) | (a.isnan() & b.isnan())).all()) for a, b in zip(tensors, kept))
    return out, untouched
'''


def _ring_cases(learner, cases, checked: str) -> None:
    learner.run(REDUCE_DRIVER)
    outcomes = learner.map("__grader_10_reduce", [(t, name, "ring") for t, name in cases])
    expected = gloo_all_reduce(cases)
    failures = []
    for (tensors, name), exp, out in zip(cases, expected, outcomes):
        if not out.ok:
            raise out.raised
        if not same_bits(exp, out.value):
            failures.append((tensors, name, exp, out.value))
    if not failures:
        return
    tensors, name, exp, got = failures[0]
    comparable = isinstance(got, torch.Tensor) and got.dtype == exp.dtype and got.shape == exp.shape
    i = first_difference(exp, got) if comparable else None
    shown_exp = float(exp[i]) if i is not None else f"a torch.{name} tensor of shape {tuple(exp.shape)}"
    shown_got = float(got[i]) if i is not None else got
    cause = diagnose_all([(t, DTYPES[nm], g) for t, nm, _, g in failures])
    raise CheckFailed(checked, describe(tensors, name, i) + f" ({len(failures)} of {len(cases)} cases differ)",
                      shown_exp, shown_got, cause=cause)


@exercise("simulated_all_reduce", points=2)
def test_ring_matches_gloo_on_worked_cases(learner):
    """The lesson's examples, one rank, empty chunks, uneven chunks and overflow match gloo."""
    three = [torch.full((6,), 1.0), torch.full((6,), 2.0**-8), torch.full((6,), 2.0**-8)]
    seven = [torch.full((7,), 1.0), torch.full((7,), 2.0**-8), torch.full((7,), 2.0**-8)]
    cases = [(three, "bfloat16"), (seven, "bfloat16"), (three, "float32"),
             ([torch.tensor([0.1, 3.0, -7.5])], "float16"),
             ([torch.tensor([1.0]), torch.tensor([2.0**-8 + 2.0**-20])], "bfloat16"),
             (make_tensors(5, 3, "wide", 1), "bfloat16"),          # fewer elements than ranks
             (make_tensors(4, 10, "ties", 2), "bfloat16"),         # 2n does not divide L
             ([torch.full((4,), 40000.0), torch.full((4,), 40000.0), torch.full((4,), -40000.0)],
              "float16"),                                          # inf, then inf - 40000
             ([torch.tensor([65504.0, 1.0]), torch.tensor([65504.0, 2.0]),
               torch.tensor([-65504.0, 3.0]), torch.tensor([-65504.0, 4.0])], "float16"),  # inf - inf
             ([torch.zeros(0), torch.zeros(0)], "bfloat16")]
    _ring_cases(learner, cases, "simulated_all_reduce(tensors, dtype) equals gloo's all-reduce, bit for bit")


@exercise("simulated_all_reduce", points=3)
def test_ring_matches_gloo_bit_for_bit_on_drawn_cases(learner, seed):
    """Drawn world sizes 1-8, lengths 0-400, three dtypes and four value profiles match gloo."""
    specs = draw(reduce_specs, n=40, seed=seed, key="10.reduce")
    cases = [(make_tensors(n, length, profile, s), name) for n, length, name, profile, s in specs]
    _ring_cases(learner, cases, "simulated_all_reduce(tensors, dtype) equals gloo's all-reduce, bit for bit")


@exercise("simulated_all_reduce", points=1)
def test_sequential_adds_in_rank_order_and_unknown_algorithms_raise(learner, seed):
    """'sequential' folds the ranks left to right; any other algorithm name raises ValueError."""
    learner.run(REDUCE_DRIVER)
    specs = draw(reduce_specs, n=12, seed=seed, key="10.sequential")
    cases = [(make_tensors(n, length, profile, s), name) for n, length, name, profile, s in specs]
    outcomes = learner.map("__grader_10_reduce", [(t, name, "sequential") for t, name in cases])
    checked = "algorithm='sequential' gives ((x0 + x1) + x2) + ..., rounded after each addition"
    for (tensors, name), out in zip(cases, outcomes):
        if not out.ok:
            raise out.raised
        expected = sequential_model(tensors, DTYPES[name])
        if not same_bits(expected, out.value):
            cause = diagnose(tensors, DTYPES[name], out.value)
            if isinstance(out.value, torch.Tensor) and same_bits(ring_model(tensors, DTYPES[name]), out.value):
                cause = "'sequential' must add the ranks in order 0, 1, 2, ... at every element, not along the ring"
            raise CheckFailed(checked, describe(tensors, name), expected, out.value, cause=cause)
    bad = learner.map("__grader_10_reduce", [(cases[0][0], "bfloat16", name) for name in ("tree", "RING", "")])
    for name, out in zip(("tree", "RING", ""), bad):
        if out.ok or out.raised.type_name != "ValueError":
            raise CheckFailed("an unknown algorithm raises ValueError", f"algorithm={name!r}", "ValueError",
                              out.raised.type_name if out.raised else out.value,
                              cause="raise ValueError(...) for any algorithm other than 'ring' and 'sequential'")


@exercise("simulated_all_reduce", points=1)
def test_result_is_a_new_tensor_and_inputs_are_untouched(learner, seed):
    """The inputs keep their values and dtype; the result is in dtype with the inputs' shape."""
    learner.run(REDUCE_DRIVER)
    specs = draw(reduce_specs, n=8, seed=seed, key="10.kept")
    cases = [(make_tensors(n, length, profile, s), name) for n, length, name, profile, s in specs]
    cases.append(([t.to(torch.bfloat16) for t in make_tensors(3, 9, "gradients", 5)], "bfloat16"))
    outcomes = learner.map("__grader_10_reduce_kept", cases)
    for (tensors, name), out in zip(cases, outcomes):
        if not out.ok:
            raise out.raised
        result, untouched = out.value
        if not untouched:
            raise CheckFailed("the input tensors are not modified", describe(tensors, name),
                              "inputs unchanged", "an input tensor changed",
                              cause="build new tensors (x.to(dtype) may return x itself when it already "
                                    "has that dtype: clone before adding into it)")
        if not isinstance(result, torch.Tensor) or result.dtype != DTYPES[name] or result.shape != tensors[0].shape:
            raise CheckFailed("the result is a tensor of dtype with the inputs' shape", describe(tensors, name),
                              f"torch.{name}, shape {tuple(tensors[0].shape)}",
                              f"{getattr(result, 'dtype', type(result).__name__)}, shape "
                              f"{tuple(getattr(result, 'shape', ()))}",
                              cause=diagnose(tensors, DTYPES[name], result))


# --- sharded_scaler_step ----------------------------------------------------------------------

SCALER_DRIVER = '''
def __grader_10_scaler_runs(cases):
    """Run each (n, state, steps) case; steps[k][r] is rank r's list of gradient value lists."""
    import torch as __torch
    runs = []
    for n, state, steps in cases:
        states = [dict(state) for _ in range(n)]
        run = []
        for step in steps:
            grads = [[__torch.tensor(g, dtype=__torch.float32) for g in shards] for shards in step]
            calls = []

            def all_reduce(tensors, calls=calls, n=n):
                calls.append([(str(t.dtype), list(t.shape), t.reshape(-1).tolist())
                              if isinstance(t, __torch.Tensor) else type(t).__name__ for t in tensors])
                if len(tensors) != n or not all(isinstance(t, __torch.Tensor) for t in tensors):
                    raise TypeError(f"all_reduce takes a list of {n} tensors, one per rank")
                total = tensors[0].clone()
                for t in tensors[1:]:
                    total = total + t
                return [total.clone() for _ in range(n)]

            unscaled, stepped, states = sharded_scaler_step(grads, states, all_reduce)
            kept = all(__torch.equal(__torch.tensor(g, dtype=__torch.float32).isnan(), t.isnan()) and
                       __torch.equal(__torch.tensor(g, dtype=__torch.float32).nan_to_num(), t.nan_to_num())
                       for shards, ts in zip(step, grads) for g, t in zip(shards, ts))
            shown = [[(str(t.dtype), t.reshape(-1).tolist()) if isinstance(t, __torch.Tensor) else t
                      for t in rank] if isinstance(rank, (list, tuple)) else rank for rank in unscaled]
            run.append({"unscaled": shown, "stepped": stepped, "states": [dict(s) for s in states],
                        "calls": calls, "inputs_kept": kept})
        runs.append(run)
    return runs
'''


class ParamGroups:
    """What GradScaler.unscale_ reads from an optimizer: its param_groups, nothing else."""

    def __init__(self, grads: list[torch.Tensor]):
        params = []
        for g in grads:
            p = torch.nn.Parameter(torch.zeros_like(g))
            p.grad = g
            params.append(p)
        self.param_groups = [{"params": params}]


def gradscaler_rank_run(state: dict, rank_steps: list, global_found: list[bool]) -> list[tuple]:
    """One rank's real GradScaler: (unscaled grads, state_dict) after each step.

    unscale_ sees this rank's gradients; a second one-element 'optimizer' carries an inf
    when any rank found one, so update() backs off exactly on the all-reduced found_inf.
    """
    kwargs = {k: v for k, v in state.items() if k != "_growth_tracker"}
    scaler = torch.amp.GradScaler("cpu", init_scale=kwargs.pop("scale"), **kwargs)
    scaler.load_state_dict(dict(state))
    scaler.scale(torch.ones(()))  # creates the float32 scale and int32 tracker
    out = []
    for shards, found in zip(rank_steps, global_found):
        grads = [torch.tensor(g, dtype=torch.float32) for g in shards]
        # Both stand-ins stay alive until update(): GradScaler keys its state by id(optimizer).
        mine, shared = ParamGroups(grads), ParamGroups([torch.tensor([math.inf if found else 0.0])])
        scaler.unscale_(mine)
        scaler.unscale_(shared)
        unscaled = [[float(v) for v in g] for g in grads]
        scaler.update()
        out.append((unscaled, scaler.state_dict()))
    return out


def _finite(shards) -> bool:
    return all(math.isfinite(v) for g in shards for v in g)


def expected_run(n: int, state: dict, steps: list) -> list[dict]:
    global_found = [not all(_finite(shards) for shards in step) for step in steps]
    per_rank = [gradscaler_rank_run(state, [step[r] for step in steps], global_found) for r in range(n)]
    return [{"unscaled": [per_rank[r][k][0] for r in range(n)],
             "stepped": [not global_found[k]] * n,
             "states": [per_rank[r][k][1] for r in range(n)],
             "local_found": [float(not _finite(step[r])) for r in range(n)]}
            for k, step in enumerate(steps)]


def same_values(expected: list[float], got) -> bool:
    if type(got) is not tuple or len(got) != 2 or got[0] != "torch.float32" or len(got[1]) != len(expected):
        return False
    return all((math.isnan(e) and math.isnan(g)) or (e == g and math.copysign(1, e) == math.copysign(1, g))
               for e, g in zip(expected, got[1]))


def _calls_shown(calls):
    """One list per all_reduce call, with each rank's found_inf value; odd arguments as short text."""
    if not isinstance(calls, list):
        return calls

    def arg(entry):
        if type(entry) is tuple and len(entry) == 3:
            dtype, shape, values = entry
            if dtype == "torch.float32" and list(shape) == [1]:
                return values[0]
            return f"{str(dtype).removeprefix('torch.')} tensor of shape {list(shape)}"
        return f"a {entry}, not a tensor"

    return [[arg(e) for e in call] if isinstance(call, list) else call for call in calls]


def calls_cause(want: list, shown) -> str:
    if not isinstance(shown, list) or len(shown) != 1:
        return ("call all_reduce exactly once per step, with all N found_inf tensors in one list, and "
                "use the sums it returns; one call per rank or per gradient is N collectives where one will do")
    call = shown[0]
    if not isinstance(call, list) or len(call) != len(want[0]) or not all(
            type(e) is tuple and e[0] == "torch.float32" and list(e[1]) == [1] for e in call):
        return "pass a list of N float32 tensors of shape (1,), one per rank, in rank order"
    return ("a rank's found_inf is 1.0 exactly when one of its shards, as passed in, holds an inf or NaN. "
            "Check before unscaling: GradScaler looks at the scaled gradients, so a finite gradient that "
            "overflows when multiplied by 1 / scale (scale < 1) does not count")


def _state_text(state: dict) -> str:
    return f"scale {state['scale']!r}, tracker {state['_growth_tracker']}"


def _steps_text(steps: list, upto: int) -> str:
    marks = []
    for step in steps[:upto + 1]:
        bad = [r for r, shards in enumerate(step) if not _finite(shards)]
        marks.append(f"inf on rank {','.join(map(str, bad))}" if bad else "clean")
    shown = marks[-8:]
    return ("… " if len(marks) > 8 else "") + "; ".join(shown)


def scaler_cause(exp: dict, got: dict, before: dict, rank: int) -> str:
    stepped_any = any(got["stepped"]) if isinstance(got["stepped"], list) else None
    if got["states"] and isinstance(got["states"], list) and len({repr(s) for s in got["states"]}) > 1:
        return ("the ranks' states differ after this step: each rank decided from its own found_inf. "
                "Call all_reduce with every rank's found_inf and decide from the sum, the same on every rank")
    if not exp["stepped"][0] and stepped_any:
        return ("a rank stepped although another rank found an inf: skip the step on every rank when the "
                "all-reduced found_inf is > 0")
    if exp["stepped"][0] and stepped_any is False:
        return ("no rank found an inf here, yet the step was skipped; found_inf counts non-finite "
                "values in the gradients as they arrive (before unscaling), summed over ranks: skip when > 0")
    e, g = exp["states"][rank], got["states"][rank] if isinstance(got["states"], list) else None
    if isinstance(g, dict) and g.get("_growth_tracker") == e["_growth_tracker"] and type(g.get("scale")) is float:
        factor = before["backoff_factor"] if not exp["stepped"][0] else before["growth_factor"]
        if g["scale"] == before["scale"] * factor:
            return ("scale kept as a Python float: round it to float32 after every change, "
                    "float32(scale * factor), as GradScaler's float32 scale tensor does")
        if not math.isfinite(g["scale"]):
            return "growth to inf is refused: keep the old scale when float32(scale * growth_factor) is inf"
    return ("update every rank's state as GradScaler.update() does, from the all-reduced found_inf: back off "
            "(float32(scale * backoff_factor), tracker 0) when it is > 0; otherwise tracker + 1, and at "
            "growth_interval grow (float32(scale * growth_factor), if finite) and reset the tracker")


def compare_scaler_runs(cases: list, runs, checked: str, what: tuple = ("stepped", "states")) -> None:
    if type(runs) is not list or len(runs) != len(cases):
        raise CheckFailed(checked, "the grader's driver got an unexpected result back", f"{len(cases)} runs",
                          runs, cause="return (unscaled, stepped, new_states) as specified")
    for (n, state, steps), run in zip(cases, runs):
        expected = expected_run(n, state, steps)
        before = dict(state)
        for k, (exp, got) in enumerate(zip(expected, run)):
            case = (f"{n} rank(s), starting from {render(state)}; steps: {_steps_text(steps, k)}. Step {k} "
                    f"is the first that differs; before it every rank had {_state_text(before)}.")
            if "stepped" in what and not same(exp["stepped"], got["stepped"]):
                raise CheckFailed(checked + " (stepped)", case, exp["stepped"], got["stepped"],
                                  cause=scaler_cause(exp, got, before, 0))
            if "states" in what and not same(exp["states"], got["states"]):
                bad = next((r for r in range(n) if not isinstance(got["states"], list) or r >= len(got["states"])
                            or not same(exp["states"][r], got["states"][r])), 0)
                shown = got["states"][bad] if isinstance(got["states"], list) and bad < len(got["states"]) \
                    else got["states"]
                raise CheckFailed(f"{checked} (new_states[{bad}])", case, exp["states"][bad], shown,
                                  cause=scaler_cause(exp, got, before, bad))
            if "unscaled" in what:
                for r in range(n):
                    ranks = got["unscaled"]
                    mine = ranks[r] if isinstance(ranks, list) and r < len(ranks) else None
                    ok = isinstance(mine, list) and len(mine) == len(exp["unscaled"][r]) and all(
                        same_values(e, g) for e, g in zip(exp["unscaled"][r], mine))
                    if not ok:
                        raise CheckFailed(checked + f" (unscaled[{r}])", case + f" Rank {r}'s gradients: "
                                          f"{render(steps[k][r])}.", exp["unscaled"][r],
                                          [g[1] if type(g) is tuple else g for g in mine] if isinstance(mine, list)
                                          else mine,
                                          cause="multiply each gradient by float32(1 / scale) (the reciprocal in "
                                                "float64, rounded once), in float32, inf and NaN included; "
                                                "dividing by the scale differs in the last bit")
                if not got["inputs_kept"]:
                    raise CheckFailed("the gradient tensors passed in are not modified", case, "unchanged",
                                      "modified", cause="return new tensors (g * inv_scale), not g.mul_(...)")
            if "calls" in what:
                shown = got["calls"]
                want = [[("torch.float32", [1], [f]) for f in exp["local_found"]]]
                if shown != want:
                    raise CheckFailed("all_reduce is called exactly once per step, with each rank's found_inf",
                                      case + " Shown: one list per all_reduce call, of each rank's found_inf.",
                                      _calls_shown(want), _calls_shown(shown), cause=calls_cause(want, shown))
            before = exp["states"][0]


def single_steps(cases: list) -> list:
    """Each step of each case on its own, starting from GradScaler's state before it.

    The unscale and all_reduce checks use these, so that a wrong scale update in
    an earlier step does not show up again as a wrong unscale.
    """
    out = []
    for n, state, steps in cases:
        before = [state] + [exp["states"][0] for exp in expected_run(n, state, steps)][:-1]
        out += [(n, start, [step]) for start, step in zip(before, steps)]
    return out


def run_scaler(learner, cases):
    learner.run(SCALER_DRIVER)
    return learner.call("__grader_10_scaler_runs", cases)


def _state(scale=65536.0, growth=2.0, backoff=0.5, interval=2000, tracker=0) -> dict:
    return {"scale": scale, "growth_factor": growth, "backoff_factor": backoff,
            "growth_interval": interval, "_growth_tracker": tracker}


def _grads(rng: random.Random, n: int, shards: list[int], p_bad: float, steps: int) -> list:
    out = []
    for _ in range(steps):
        step = []
        for _ in range(n):
            rank = [[rng.choice([1.0, -1.0]) * rng.uniform(0, 4) * 2.0 ** rng.randint(-30, 40)
                     for _ in range(size)] for size in shards]
            if rng.random() < p_bad and any(shards):
                i = rng.choice([j for j, size in enumerate(shards) if size])
                rank[i][rng.randrange(shards[i])] = rng.choice([math.inf, -math.inf, math.nan])
            step.append([[float(np.float32(v)) for v in g] for g in rank])
        out.append(step)
    return out


def _worked_cases() -> list:
    inf = math.inf
    return [
        (2, _state(1024.0, interval=2), [[[[2048.0, -512.0]], [[inf, 8.0]]], [[[4.0]], [[8.0]]],
                                         [[[1.0]], [[2.0]]], [[[1.0]], [[math.nan]]]]),
        (3, _state(8.0, interval=1), [[[[1.0], [2.0]], [[3.0], [4.0]], [[5.0], [6.0]]],
                                      [[[1.0], [2.0]], [[3.0], [-inf]], [[5.0], [6.0]]],
                                      [[[1.0], [2.0]], [[3.0], [4.0]], [[5.0], [6.0]]]]),
        (4, _state(3.0, growth=1.5, backoff=0.3, interval=2),
         _grads(random.Random(7), 4, [3, 0, 2], 0.15, 12)),
        (1, _state(2.0**127, interval=1), [[[[1.0]]], [[[1.0]]], [[[inf]]]]),
        (2, _state(0.25), [[[[3e38, 1.0]], [[1.0, 1.0]]]]),  # unscaling makes an inf; found_inf stays 0
    ]


scaler_specs = st.tuples(
    st.integers(min_value=1, max_value=5),
    st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=3),
    # scales as a GradScaler state_dict holds them: float32 values
    st.sampled_from([float(np.float32(v)) for v in (65536.0, 1024.0, 3.0, 0.1, 1e-3, 2.0**120, 1000.1)]),
    st.sampled_from([2.0, 1.5, 3.7]), st.sampled_from([0.5, 0.3, 0.999]),
    st.integers(min_value=1, max_value=5),
    st.sampled_from([0.0, 0.1, 0.3, 0.7]),
    st.integers(min_value=1, max_value=14),
    st.integers(min_value=0, max_value=2**32 - 1),
)


def _drawn_cases(seed: int, n_cases: int, key: str) -> list:
    cases = []
    for n, shards, scale, growth, backoff, interval, p_bad, steps, s in draw(scaler_specs, n_cases, seed, key):
        cases.append((n, _state(scale, growth, backoff, interval), _grads(random.Random(s), n, shards, p_bad, steps)))
    return cases


CHECKED_LOCKSTEP = "every rank skips or steps together and its state follows GradScaler on the all-reduced found_inf"


@exercise("sharded_scaler_step", points=2)
def test_ranks_stay_in_lockstep_on_worked_runs(learner):
    """An inf on one rank stops every rank; states follow GradScaler on the all-reduced found_inf."""
    cases = _worked_cases()
    compare_scaler_runs(cases, run_scaler(learner, cases), CHECKED_LOCKSTEP)


@exercise("sharded_scaler_step", points=2)
def test_ranks_stay_in_lockstep_on_drawn_runs(learner, seed):
    """Drawn world sizes, shard layouts, factors and overflow patterns keep the ranks in lock-step."""
    cases = _drawn_cases(seed, 25, "10.scaler")
    compare_scaler_runs(cases, run_scaler(learner, cases), CHECKED_LOCKSTEP)


@exercise("sharded_scaler_step", points=2)
def test_unscaled_gradients_match_gradscaler_bit_for_bit(learner, seed):
    """Each rank's gradients are multiplied by float32(1/scale), like GradScaler.unscale_; inputs kept."""
    cases = single_steps(_worked_cases() + _drawn_cases(seed, 10, "10.unscale"))
    compare_scaler_runs(cases, run_scaler(learner, cases), "unscaled gradients match GradScaler.unscale_",
                        what=("unscaled",))


@exercise("sharded_scaler_step", points=1)
def test_found_inf_goes_through_one_all_reduce_per_step(learner, seed):
    """all_reduce is called once per step with one float32 found_inf of shape (1,) per rank."""
    cases = single_steps(_worked_cases() + _drawn_cases(seed, 6, "10.calls"))
    compare_scaler_runs(cases, run_scaler(learner, cases), "all_reduce use", what=("calls",))
