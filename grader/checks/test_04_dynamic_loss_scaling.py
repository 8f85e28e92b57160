"""Hidden checks for lesson 04, dynamic loss scaling: DynamicLossScaler against GradScaler.

Every expected value is computed here, in the trusted process, by a real
`torch.amp.GradScaler("cpu")` driven through its public API (scale, unscale_,
update, state_dict). The learner's scaler runs in the worker under a small
driver shipped with `learner.run`, so a whole batch of overflow sequences costs
one round trip and comes back as plain (scale, tracker) pairs.

When a run differs, the message names the first differing step, the found_inf
sequence up to it, the state just before it, and a likely cause worked out from
that one step (the two sides agree on everything before it).
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import torch
from hypothesis import strategies as st

from grader.checkkit import CheckFailed, draw, exercise, render, same, same_floats

EXERCISE = "DynamicLossScaler"
CHECKED_RUN = "the scale and growth tracker after every update() match torch.amp.GradScaler('cpu')"

# --- the driver that runs in the worker, next to the learner's class -------------------

DRIVER = '''
def __grader_04_scaler(kwargs, state):
    scaler = DynamicLossScaler(**kwargs)
    if state is not None:
        scaler.load_state_dict(dict(state))
    return scaler


def __grader_04_runs(cases):
    """Run each (kwargs, state, found_infs) case; return [(scale, tracker)] per step."""
    runs = []
    for kwargs, state, found_infs in cases:
        scaler = __grader_04_scaler(kwargs, state)
        readable = [True]

        def snapshot():
            tracker = None
            if readable[0]:
                try:
                    tracker = scaler.state_dict()["_growth_tracker"]
                except Exception:
                    readable[0] = False
            return (scaler.scale, tracker)

        steps = [snapshot()]
        for found_inf in found_infs:
            scaler.update(found_inf)
            steps.append(snapshot())
        runs.append(steps)
    return runs


def __grader_04_state_dicts(cases):
    """For each (kwargs, state, found_infs) case: (state_dict(), scale) at the end."""
    out = []
    for kwargs, state, found_infs in cases:
        scaler = __grader_04_scaler(kwargs, state)
        for found_inf in found_infs:
            scaler.update(found_inf)
        out.append((scaler.state_dict(), scaler.scale))
    return out


def __grader_04_unscale(cases):
    """Unscale each (scale, grads); report the result, input mutation and the scale after.

    A raise other than NotImplementedError is reported per case, as {"raised": ...}, so that
    one case (say, scale 0.0) can be explained without losing the others."""
    out = []
    for scale, grads in cases:
        scaler = DynamicLossScaler(init_scale=scale)
        before = scaler.scale
        kept = [repr(g) for g in grads]
        try:
            result = scaler.unscale(grads)
        except NotImplementedError:
            raise
        except Exception as exc:
            result = {"raised": type(exc).__name__, "message": str(exc)[:200]}
        mutated = [repr(g) for g in grads] != kept
        out.append((result, mutated, before, scaler.scale))
    return out
'''


# --- the reference: torch.amp.GradScaler on CPU ----------------------------------------

class ParamGroups:
    """What GradScaler.unscale_ reads from an optimizer: its param_groups, nothing else.

    A real torch.optim.SGD would do as well, but constructing the first one imports
    torch._dynamo, over a second of grading time spent on nothing.
    """

    def __init__(self, param: torch.Tensor):
        self.param_groups = [{"params": [param]}]


def gradscaler_run(kwargs: dict, state: dict | None, found_infs: list[bool]) -> list[tuple]:
    """(scale, growth tracker) after construction and after each update() of a real GradScaler.

    Cached, so a batch of submissions pays for each reference run once.
    """
    key = (tuple(kwargs.items()), tuple(state.items()) if state is not None else None,
           tuple(found_infs))
    if key not in _reference_runs:
        _reference_runs[key] = _gradscaler_run(kwargs, state, found_infs)
    return _reference_runs[key]


_reference_runs: dict[tuple, list[tuple]] = {}


def _gradscaler_steps(kwargs: dict, state: dict | None, found_infs: list[bool]):
    """A real GradScaler("cpu"), yielded once set up and again after each update()."""
    param = torch.nn.Parameter(torch.zeros(1))
    param.grad = torch.zeros(1)
    opt = ParamGroups(param)
    scaler = torch.amp.GradScaler("cpu", **kwargs)
    if state is not None:
        scaler.load_state_dict(dict(state))
    scaler.scale(torch.ones(()))  # creates the float32 scale and int32 tracker
    yield scaler
    for found_inf in found_infs:
        param.grad.fill_(math.inf if found_inf else 1.0)
        scaler.unscale_(opt)
        scaler.update()
        yield scaler


def _gradscaler_run(kwargs: dict, state: dict | None, found_infs: list[bool]) -> list[tuple]:
    return [(scaler.get_scale(), scaler.state_dict()["_growth_tracker"])
            for scaler in _gradscaler_steps(kwargs, state, found_infs)]


def gradscaler_state_dict(kwargs: dict, found_infs: list[bool], state: dict | None = None) -> dict:
    *_, scaler = _gradscaler_steps(kwargs, state, found_infs)
    return scaler.state_dict()


def gradscaler_unscale(scale: float, grads: list[float]) -> tuple[list[float], bool]:
    """GradScaler.unscale_ on float32 grads; found_inf read back through update().

    update() resets the tracker to 0 exactly when unscale_ saw an inf or NaN, and counts a
    clean update otherwise; the scale itself would not tell at 0.0, where a backoff keeps it.
    """
    param = torch.nn.Parameter(torch.zeros(len(grads)))
    opt = ParamGroups(param)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=2**30)
    scaler.scale(torch.ones(()))
    param.grad = torch.tensor(grads, dtype=torch.float32)
    scaler.unscale_(opt)
    values = param.grad.tolist()
    scaler.update()
    return values, scaler.state_dict()["_growth_tracker"] == 0


# --- rendering and diagnosis ------------------------------------------------------------

def f32(x: float) -> float:
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return float(np.float32(x))


def f32_product(scale: float, factor: float) -> float:
    """The product NumPy 2 computes for np.float32(scale) * factor: all in float32."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(np.float32(scale) * np.float32(factor))


def constructor_text(kwargs: dict) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"DynamicLossScaler({args})"


def sequence_text(found_infs: list[bool], upto: int, keep: int = 14) -> str:
    words = ["inf" if bad else "ok" for bad in found_infs[:upto]]
    if len(words) > keep:
        return f"({len(words) - keep} earlier updates) … " + " ".join(words[-keep:])
    return " ".join(words) if words else "(none)"


def type_cause(value) -> str:
    name = type(value).__name__
    if type(value).__module__ == "numpy":
        return (f"`.scale` returned numpy.{name}; the property must return a Python float: "
                "return float(self._scale)")
    return f"`.scale` returned {render(value)} ({name}); it must return a Python float"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def explain_step(params: dict, before: tuple, found_inf: bool, expected: tuple, got: tuple) -> str:
    """A likely cause for the first differing step, given the agreed state before it."""
    prev_scale, prev_tracker = before
    exp_scale, exp_tracker = expected
    got_scale, got_tracker = got
    growth, backoff = params["growth_factor"], params["backoff_factor"]
    interval = params["growth_interval"]
    if type(got_scale) is not float:
        return type_cause(got_scale)
    scale_ok = got_scale == exp_scale
    if found_inf:
        if scale_ok and got_tracker is not None and got_tracker != 0:
            return "backoff did not reset the tracker: an overflow sets the growth tracker to 0"
        if got_scale == prev_scale * backoff:
            return ("scale kept as a Python float, not float32: PyTorch stores "
                    "np.float32(float(scale) * backoff_factor), rounded to float32 after every update")
        if got_scale == f32_product(prev_scale, backoff):
            return ("the product was computed in float32: np.float32(scale) * backoff_factor stays "
                    "float32 in NumPy 2, so backoff_factor is rounded to float32 first. Multiply in "
                    "double and round once: np.float32(float(scale) * backoff_factor)")
        if got_scale == prev_scale:
            return ("the scale did not back off. PyTorch backs off on every overflow, with no floor "
                    "and no hysteresis: float32(scale * backoff_factor), down to 0.0 if need be")
        if got_scale > exp_scale:
            return ("the scale stopped above PyTorch's: GradScaler has no minimum scale; it keeps "
                    "multiplying by backoff_factor, through float32 subnormals down to 0.0")
        return "on found_inf=True the scale becomes np.float32(float(scale) * backoff_factor)"
    successful = prev_tracker + 1
    if successful == interval:
        grown = f32(prev_scale * growth)
        late = (f"this update is a growth step (tracker + 1 == growth_interval == {interval}), "
                "and a scaler that tests for growth one update late shows this same symptom")
        if scale_ok and got_tracker not in (None, 0):
            if not math.isfinite(grown):
                return ("tracker not reset after a refused growth: float32(scale * growth_factor) is "
                        "inf, so the scale stays, but the tracker still goes back to 0. Also: " + late)
            if grown == prev_scale:
                return ("tracker not reset: the scale cannot change here (0 or stuck in float32 "
                        "rounding) but the tracker still goes back to 0. Also: " + late)
            return "tracker not reset after growth: set it to 0 when the scale grows"
        if not math.isfinite(grown):
            if got_scale == prev_scale * growth and math.isfinite(got_scale):
                return ("scale kept as a Python float, not float32: float32(scale * growth_factor) "
                        "is inf here, so PyTorch refuses the growth, but a Python float can hold it")
            if math.isinf(got_scale):
                return ("growth to inf not refused: when float32(scale * growth_factor) is not "
                        "finite, PyTorch keeps the old scale (and still resets the tracker)")
        else:
            if got_scale == prev_scale:
                return (f"no growth on the {ordinal(interval)} consecutive clean update: grow when "
                        "tracker + 1 == growth_interval (an off-by-one grows one update late)")
            if got_scale == prev_scale * growth:
                return ("scale kept as a Python float, not float32: PyTorch stores "
                        "np.float32(float(scale) * growth_factor)")
            if got_scale == f32_product(prev_scale, growth):
                return ("the product was computed in float32 (np.float32 * a Python float stays "
                        "float32 in NumPy 2); multiply in double and round once: "
                        "np.float32(float(scale) * growth_factor)")
        return ("on the growth_interval-th clean update the scale becomes "
                "np.float32(float(scale) * growth_factor) if that is finite, and the tracker 0")
    if got_scale != prev_scale:
        if successful > interval:
            return (">= instead of == on the tracker: PyTorch grows only when tracker + 1 equals "
                    "growth_interval exactly, so a tracker already past it (here loaded from a "
                    "state_dict) never triggers growth until an overflow resets it")
        if successful == interval - 1:
            return ("grew one update early: the tracker counts clean updates since the last growth "
                    "or backoff, and growth happens when tracker + 1 == growth_interval")
        return "the scale changed on a clean update that is not a growth step"
    if got_tracker is not None and got_tracker != successful:
        return "the tracker should go up by one on each clean update that does not grow the scale"
    return "compare your update() with the rule in the lesson, one branch at a time"


def compare_runs(cases: list[tuple], got_runs, checked: str = CHECKED_RUN) -> None:
    """Compare learner runs with GradScaler's; raise CheckFailed at the first differing step."""
    if type(got_runs) is not list or len(got_runs) != len(cases):
        raise CheckFailed(checked, "the grader's driver got an unexpected result back",
                          f"{len(cases)} runs", got_runs,
                          cause="make sure DynamicLossScaler(...), .update and .scale work as specified")
    for (kwargs, state, found_infs), got in zip(cases, got_runs):
        expected = gradscaler_run(kwargs, state, found_infs)
        params = {"growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, **kwargs,
                  **(state or {})}
        for step, (exp, out) in enumerate(zip(expected, got)):
            got_scale, got_tracker = out
            if isinstance(got_scale, np.floating):  # the type is graded once, in the state_dict check
                got_scale = float(got_scale)
                out = (got_scale, got_tracker)
            tracker_ok = got_tracker is None or (type(got_tracker) is not bool and got_tracker == exp[1])
            if type(got_scale) is float and got_scale == exp[0] and tracker_ok:
                continue
            start = constructor_text(kwargs)
            if state is not None:
                start += f" then load_state_dict({render(state)})"
            shown_exp = {"scale": exp[0], "growth_tracker": exp[1]}
            shown_got = {"scale": got_scale, "growth_tracker": got_tracker}
            if got_tracker is None:
                shown_exp.pop("growth_tracker")
                shown_got.pop("growth_tracker")
            if step == 0:
                where = "load_state_dict" if state is not None else "construction"
                case = f"{start}; right after {where}, before any update()."
                if type(got_scale) is not float:
                    cause = type_cause(got_scale)
                elif state is not None:
                    cause = ("load_state_dict must set the scale (as np.float32) and the growth "
                             "tracker from the dict, like GradScaler.load_state_dict")
                else:
                    cause = ("the initial scale is float32(init_scale) and the tracker 0: store "
                             "np.float32(init_scale), not the Python float")
                raise CheckFailed(checked, case, shown_exp, shown_got, cause)
            before = expected[step - 1]
            case = (f"{start}; update(found_inf) calls: {sequence_text(found_infs, step)}. "
                    f"Update {step} (found_inf={found_infs[step - 1]}) is the first that differs; "
                    f"before it both had scale {before[0]!r}, tracker {before[1]}.")
            cause = explain_step(params, before, found_infs[step - 1], exp, out)
            raise CheckFailed(checked, case, shown_exp, shown_got, cause)
        if len(got) != len(expected):
            raise CheckFailed(checked, constructor_text(kwargs), f"{len(expected)} snapshots",
                              f"{len(got)} snapshots", cause="the driver's run ended early")


def run_learner(learner, cases: list[tuple]):
    learner.run(DRIVER)
    return learner.call("__grader_04_runs", cases)


# --- drawn inputs --------------------------------------------------------------------------

def _sequence(spec: tuple) -> list[bool]:
    p_bad, length, seed = spec
    rng = random.Random(seed)
    return [rng.random() < p_bad for _ in range(length)]


run_specs = st.tuples(
    st.one_of(st.sampled_from([65536.0, 4.0, 3.0, 1.0, 0.1, 1000.1, 1e30, 1e-30, 2.0**127,
                               1.5 * 2.0**127, 2.0**-140]),
              st.floats(min_value=1e-38, max_value=3.4e38)),
    st.one_of(st.sampled_from([2.0, 1.5, 1.0001, 3.7]), st.floats(min_value=1.0001, max_value=4.0)),
    st.one_of(st.sampled_from([0.5, 0.3, 0.999, 0.125]), st.floats(min_value=0.01, max_value=0.999)),
    st.one_of(st.sampled_from([1, 2, 3]), st.integers(min_value=1, max_value=12)),
    st.tuples(st.sampled_from([0.0, 0.05, 0.2, 0.5, 0.9, 1.0]), st.integers(min_value=1, max_value=120),
              st.integers(min_value=0, max_value=2**32 - 1)),
)

# Checkpoints to resume from: default factors and moderate scales, so that the check
# is about loading, not about float32 rounding in update() (other checks cover that).
load_specs = st.tuples(
    st.floats(min_value=2.0**-60, max_value=2.0**60),
    st.integers(min_value=1, max_value=6),
    st.tuples(st.sampled_from([0.05, 0.2, 0.5]), st.integers(min_value=2, max_value=40),
              st.integers(min_value=0, max_value=2**32 - 1)),
)

float32_grads = st.floats(width=32, allow_nan=False, allow_infinity=False)
unscale_specs = st.tuples(
    st.one_of(st.sampled_from([65536.0, 3.0, 7.0, 1.0, 1e-3, 2.0**-10, 2.0**24, 3.0 * 2**20, 1e30]),
              st.floats(min_value=2.0**-100, max_value=2.0**126, width=32)),
    st.lists(float32_grads, max_size=8),
)


# --- the checks ----------------------------------------------------------------------------

@exercise(EXERCISE, points=2)
def test_scaler_follows_gradscaler_on_worked_sequences(learner):
    """The scale and tracker follow GradScaler on the lesson's example and long default runs."""
    defaults_long = [False] * 2000 + [True, True] + [False] * 3  # grows on the 2000th clean update
    cases = [
        ({"init_scale": 4.0, "growth_interval": 3},
         None, [False, False, False, False, True, False, False, False, True, True]),
        ({}, None, defaults_long),
        ({"init_scale": 1024.0, "growth_interval": 1}, None, [False, True] * 6 + [False] * 4),
        ({"init_scale": 65536.0, "growth_factor": 1.5, "backoff_factor": 0.3, "growth_interval": 2},
         None, [False, False, True, False, False, False, True, True, False, False]),
    ]
    compare_runs(cases, run_learner(learner, cases))


@exercise(EXERCISE, points=2)
def test_scaler_matches_gradscaler_on_drawn_runs(learner, seed):
    """The scale and tracker follow GradScaler on random overflow runs with unusual parameters."""
    specs = draw(run_specs, n=30, seed=seed, key="04.runs")
    cases = [({"init_scale": init, "growth_factor": growth, "backoff_factor": backoff,
               "growth_interval": interval}, None, _sequence(seq))
             for init, growth, backoff, interval, seq in specs]
    compare_runs(cases, run_learner(learner, cases))


@exercise(EXERCISE, points=1)
def test_scaler_never_grows_to_inf(learner):
    """Growth that would overflow float32 is refused, and the tracker is reset anyway."""
    cases = [
        ({"init_scale": 2.0**127, "growth_interval": 1}, None, [False, False, False]),
        ({"init_scale": 1.5 * 2.0**127, "growth_interval": 2},
         None, [False, False, False, False, True, False, False, False]),
        ({"init_scale": 3e38, "growth_factor": 1.0001, "growth_interval": 1}, None, [False] * 40),
        ({"init_scale": 2.0**126, "growth_factor": 3.7, "growth_interval": 1},
         None, [False, False, False, True, False, False]),
    ]
    compare_runs(cases, run_learner(learner, cases))


@exercise(EXERCISE, points=1)
def test_scaler_backs_off_without_a_floor(learner):
    """Repeated overflows keep shrinking the float32 scale, down to 0.0, with no minimum."""
    cases = [
        ({"init_scale": 1.0, "growth_interval": 2}, None, [True] * 152 + [False] * 4),
        ({"init_scale": 65536.0, "backoff_factor": 0.3, "growth_interval": 1},
         None, [True] * 100 + [False] * 3),
        ({"init_scale": 1e-42, "backoff_factor": 0.999, "growth_interval": 5}, None, [True] * 400),
        ({"init_scale": 2.0**-140, "growth_interval": 3}, None, [True, False, False, False] * 3),
    ]
    compare_runs(cases, run_learner(learner, cases))


def _state_cause(expected: dict, out, learner_scale, expected_scale, updated: bool) -> str:
    if type(out) is not dict:
        return "state_dict() returns a dict"
    if set(out) != set(expected):
        return (f"use exactly GradScaler's keys {sorted(expected)}; the tracker's key starts "
                "with an underscore")
    k = next(k for k in expected if not same(expected[k], out[k]))
    if type(out[k]) is not type(expected[k]):
        return (f"state_dict()[{k!r}] is a {type(out[k]).__name__}; GradScaler gives a Python "
                f"{type(expected[k]).__name__} (convert with float(...) or int(...))")
    if k in ("growth_interval", "growth_factor", "backoff_factor") and not updated:
        return (f"load_state_dict must restore {k} from the dict, as GradScaler.load_state_dict does: "
                "the checkpoint's value replaces the one given to the constructor")
    if k == "scale" and not updated:
        return ("load_state_dict must store the scale as np.float32(state_dict['scale']), as "
                "GradScaler does, so state_dict() gives back the float32 value")
    if k == "scale" and out[k] == learner_scale != expected_scale:
        return ("state_dict() reports your scale faithfully, but the scale itself differs from "
                "GradScaler's after these updates: see the update() checks for the first differing step")
    if k == "_growth_tracker" and updated:
        return ("the tracker differs from GradScaler's after these updates: either state_dict() "
                "reports a stale value, or update() counts differently (the update() checks name "
                "the first differing step)")
    return f"state_dict()[{k!r}] must hold the scaler's current value"


@exercise(EXERCISE, points=1)
def test_state_dict_matches_gradscaler(learner, seed):
    """state_dict() and .scale have GradScaler's keys, types and values, after a load and after updates."""
    specs = draw(run_specs, n=6, seed=seed, key="04.state")
    # Loaded, then read back at once: this part does not depend on update().
    loaded = [{"scale": 1000.1, "growth_factor": 1.5, "backoff_factor": 0.3, "growth_interval": 7,
               "_growth_tracker": 9}]
    for init, growth, backoff, interval, seq in specs:
        loaded.append(gradscaler_state_dict({"init_scale": init, "growth_factor": growth,
                                             "backoff_factor": backoff, "growth_interval": interval},
                                            _sequence(seq)))
    cases = [({}, state, []) for state in loaded]
    # After updates with power-of-two factors, where float32 rounding rarely matters.
    cases += [({"init_scale": 4.0, "growth_interval": 3}, None, [False, False, False, False]),
              ({}, None, [False, True, False, False]),
              ({"init_scale": 2.0**-20, "growth_interval": 2}, None, [False, False, False, True, False])]
    learner.run(DRIVER)
    got = learner.call("__grader_04_state_dicts", cases)
    for (kwargs, state, found_infs), (out, learner_scale) in zip(cases, got):
        expected = gradscaler_state_dict(kwargs, found_infs, state)
        case = constructor_text(kwargs)
        if state is not None:
            case += f", then load_state_dict({render(state)})"
        if found_infs:
            case += f", then update(found_inf) for: {sequence_text(found_infs, len(found_infs))}"
        if type(learner_scale) is not float:
            raise CheckFailed("`.scale` is a Python float, as GradScaler.get_scale() returns",
                              case + ", then .scale", expected["scale"], learner_scale,
                              type_cause(learner_scale))
        if same(expected, out):
            continue
        raise CheckFailed("state_dict() equals torch.amp.GradScaler('cpu').state_dict() after the "
                          "same calls", case + ", then state_dict()", expected, out,
                          _state_cause(expected, out, learner_scale, expected["scale"], bool(found_infs)))


@exercise(EXERCISE, points=1)
def test_load_state_dict_continues_like_gradscaler(learner, seed):
    """A scaler that loads a GradScaler's state_dict continues exactly like that GradScaler."""
    specs = draw(load_specs, n=6, seed=seed, key="04.load")
    ahead = gradscaler_state_dict({"init_scale": 2.0**10, "growth_interval": 10}, [False] * 7)
    ahead["growth_interval"] = 3  # resumed, then set_growth_interval(3): the tracker is already past it
    states = [
        (gradscaler_state_dict({"init_scale": 4.0, "growth_interval": 3}, [False] * 4),
         [False, False, True, False, False, False]),
        (ahead, [False] * 5 + [True] + [False] * 4),
        ({"scale": 1000.1, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2,
          "_growth_tracker": 1}, [False, True, False, False, False]),
    ]
    for init, interval, seq in specs:
        found_infs = _sequence(seq)
        half = len(found_infs) // 2
        kwargs = {"init_scale": init, "growth_interval": interval}
        states.append((gradscaler_state_dict(kwargs, found_infs[:half]), found_infs[half:]))
    cases = [({}, state, rest) for state, rest in states]
    compare_runs(cases, run_learner(learner, cases),
                 checked="after load_state_dict(GradScaler's state_dict), every update() matches "
                         "that GradScaler's")


def _unscale_cause(scale: float, grads: list[float], expected: list[float], got: list[float]) -> str:
    g32 = np.asarray(grads, dtype=np.float32)
    with np.errstate(all="ignore"):
        inv32 = np.float32(np.float64(1.0) / np.float64(f32(scale)))  # inf at scale 0.0, as in PyTorch
        variants = [
            ((g32 / np.float32(scale)).astype(np.float32).tolist(),
             "divided by the scale in float32; PyTorch multiplies by inv = float32(1/scale)"),
            ([f32(np.float64(g) / np.float64(scale)) for g in grads],
             "divided in double, then rounded; PyTorch multiplies by inv = float32(1/scale)"),
            ([float(np.float64(g) / np.float64(scale)) for g in grads],
             "divided in double and never rounded to float32"),
            ([float(g) * float(inv32) for g in g32],
             "the product g * inv was not rounded to float32: multiply float32 by float32"),
        ]
    for values, cause in variants:
        if same_floats(values, got) and not same_floats(expected, values):
            return cause
    return ("round each grad to float32, multiply by inv = float32(1/scale) (the reciprocal taken "
            "in double) in float32, return Python floats (.tolist())")


def _raised_cause(scale: float, result: dict) -> str:
    if scale == 0.0 and result.get("raised") == "ZeroDivisionError":
        return ("Python's 1.0 / 0.0 raises, but GradScaler reaches scale 0.0 after enough backoffs and "
                "takes the reciprocal of its float32 scale as a double tensor, where 1/0 is inf: "
                "compute the reciprocal in NumPy (np.float64), so inv is inf, nonzero grads become "
                "+-inf and zeros NaN, and found_inf still reflects only the incoming grads")
    return "unscale must not raise for a finite, non-negative scale and a list of float32 grads"


def _plain_unscale_result(result):
    """The result with NumPy stand-ins (array, np.bool_, a list for the tuple) made plain."""
    if type(result) in (list, tuple) and len(result) == 2:
        values, found = result
        if isinstance(values, np.ndarray):
            values = values.tolist()
        if type(values) is list:
            values = [float(v) if isinstance(v, np.floating) else v for v in values]
        if isinstance(found, np.bool_):
            found = bool(found)
        return (values, found)
    return result


def check_unscale_batch(learner, cases: list[tuple], checked: str, part: str) -> None:
    """part="values": exact values and return types; part="flags": found_inf and no mutation.

    Each part grades only its own behaviour, so one slip costs one check, not both.
    """
    learner.run(DRIVER)
    got = learner.call("__grader_04_unscale", cases)
    for (scale, grads), (result, mutated, before, after) in zip(cases, got):
        exp_values, exp_found = gradscaler_unscale(scale, grads)
        expected = (exp_values, exp_found)
        case = f"DynamicLossScaler(init_scale={scale!r}).unscale({render(grads)})"
        if type(result) is dict and "raised" in result:
            raise CheckFailed(checked, case, expected, f"{result.get('raised')}: {result.get('message')}",
                              cause=_raised_cause(scale, result))
        if not after == before:
            raise CheckFailed(checked, case + " then .scale", before, after,
                              cause="unscale must not change the scale; only update() does")
        if part == "flags":
            if mutated:
                raise CheckFailed(checked, case, show_values=False,
                                  cause="unscale modified the input list; build and return a new list")
            plain = _plain_unscale_result(result)
            found = plain[1] if type(plain) is tuple else None
            if type(found) is not bool:
                raise CheckFailed(checked, case, expected, result,
                                  cause="return a pair (unscaled_grads, found_inf) with found_inf a bool")
            if found != exp_found:
                if exp_found and any(math.isnan(g) for g in grads):
                    cause = "NaN must set found_inf too: test each grad with math.isfinite (or np.isfinite)"
                elif not exp_found and not all(math.isfinite(v) for v in exp_values):
                    cause = ("found_inf is checked on the incoming grads, before multiplying: here "
                             "finite grads become inf or NaN when unscaled by a tiny or zero scale, "
                             "and PyTorch does not flag them")
                else:
                    cause = "found_inf is True exactly when some incoming grad is inf or NaN"
                raise CheckFailed(checked, case, expected, result, cause)
            continue
        if type(result) is not tuple or len(result) != 2:
            raise CheckFailed(checked, case, expected, result,
                              cause="return a tuple (unscaled_grads, found_inf)")
        values, found = result
        if type(found) is not bool:
            name = f"{type(found).__module__}.{type(found).__name__}".removeprefix("builtins.")
            raise CheckFailed(checked, case, expected, result,
                              cause=f"found_inf is a {name}; return a Python bool (wrap it: bool(...))")
        if type(values) is not list or not all(type(v) is float for v in values):
            raise CheckFailed(checked, case, expected, result,
                              cause="return the unscaled grads as a list of Python floats "
                                    "(a float32 array's .tolist() gives one)")
        if not same_floats(exp_values, values):
            raise CheckFailed(checked, case, expected, result,
                              cause=_unscale_cause(scale, grads, exp_values, values))


@exercise(EXERCISE, points=1)
def test_unscale_matches_gradscaler_bit_for_bit(learner, seed):
    """unscale() returns GradScaler.unscale_'s float32 values exactly, as a tuple of a list and a bool."""
    cases = [(3.0, [5.0, 1.0, 7.0, 10.0]), (7.0, [7.0, -7.0, 0.0, 1e-38]), (65536.0, [])]
    cases += draw(unscale_specs, n=80, seed=seed, key="04.unscale")
    check_unscale_batch(learner, cases, "unscale(grads) equals float32(g) * float32(1/scale) for "
                                        "every grad, as GradScaler.unscale_ computes it", "values")


@exercise(EXERCISE, points=1)
def test_unscale_at_scale_zero_multiplies_by_inf_like_gradscaler(learner):
    """At scale 0.0 (150 halvings from 1.0) inv is inf: grads become +-inf or NaN, found_inf stays False."""
    cases = [(0.0, [5.0, -7.0, 0.0, -0.0]), (0.0, [1e-45, -65504.0, 1.0]), (0.0, []),
             (0.0, [0.0, math.inf]), (0.0, [math.nan, 1.0]),
             # Not zero, but 1/scale overflows float32: inv is inf here too, with no division by zero.
             (2.0**-149, [1.0, 0.0, -3.5]), (1e-40, [2.0, -0.0])]
    check_unscale_batch(learner, cases, "unscale(grads) at a zero or subnormal scale equals "
                                        "GradScaler.unscale_'s inf and NaN products, and its found_inf",
                        "values")
    check_unscale_batch(learner, cases, "unscale(grads) at a zero or subnormal scale sets found_inf only "
                                        "for an incoming inf or NaN", "flags")


@exercise(EXERCISE, points=1)
def test_unscale_flags_inf_and_nan_anywhere(learner):
    """unscale() sets found_inf for an inf or NaN in any position and leaves the input list alone."""
    cases = []
    for n in range(1, 6):
        base = [float(2 * i + 1) for i in range(n)]
        cases.append((1024.0, list(base)))
        for bad in (math.inf, -math.inf, math.nan):
            for pos in range(n):
                grads = list(base)
                grads[pos] = bad
                cases.append((1024.0, grads))
    cases += [(8.0, [math.nan, math.inf, -math.inf]), (8.0, [0.0, -0.0]),
              (1e-30, [1e10, 1.0])]  # finite in, inf out: not an overflow of the incoming grads
    check_unscale_batch(learner, cases, "unscale(grads) returns found_inf=True exactly when a grad "
                                        "is inf or NaN, whatever its position, and leaves grads alone",
                        "flags")
