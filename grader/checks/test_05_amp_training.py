"""Hidden checks for lesson 05: `amp_train_window`, one AMP optimizer step over an
accumulation window (10 pts).

A small driver shipped to the worker builds a tiny MLP from weights drawn here,
a plain SGD, a warm-up LR schedule and a `torch.amp.GradScaler("cpu")`, calls the
learner's function on several windows in a row, and reports plain data after
each: what the function returned, the scale, the scheduler's last LR and the
parameters. The same windows run here through the reference loop, with a real
GradScaler. On a mismatch the run is replayed here with known mistakes, so that
the message can name the likely one.

Tolerances (stated in the exercise): the loss within a relative 1e-5, every
parameter within an absolute 1e-6, `skipped`, the scale and the LR exactly.
Micro-batch counts are powers of two, so `loss / n` is exact however it is written.
"""

from __future__ import annotations

import functools
import math

import torch
from hypothesis import strategies as st

from grader.checkkit import CheckFailed, LearnerRaised, draw, exercise

from grader.checks.reference_05 import (DRIVER, MISTAKES, first_difference, reference_run,
                                        returned_pair, windows_from)

EXERCISE = "amp_train_window"


# -- the setting, drawn ----------------------------------------------------------------

def pick(strategy, seed: int, key: str):
    """One drawn example. Hypothesis starts from the simplest examples (0, the first
    option, the shortest list), so take the last of a few, which is a random one."""
    return draw(strategy, n=10, seed=seed, key=key)[-1]


@functools.cache
def _draw(seed: int, key: str, counts: tuple, inf_windows=0, big_targets=False):
    """Initial weights and windows (lists of (x, y)) from one drawn case: the window
    sizes are a drawn order of `counts`. Cached, so that a batch of submissions
    shares the data and the reference runs."""
    case = pick(st.tuples(st.integers(0, 2**31 - 1), st.sampled_from([4, 6, 8]),
                          st.permutations(counts),
                          st.lists(st.integers(0, 3), min_size=len(counts), max_size=len(counts))),
                seed, key)
    return windows_from(*case, inf_windows=inf_windows, big_targets=big_targets)


# -- comparing runs ------------------------------------------------------------------------

def _g4(x) -> object:
    return float(f"{x:.4g}") if type(x) is float and math.isfinite(x) else x


def _view(record: dict, initial: list) -> dict:
    """A plain summary of one window's state, for the message."""
    returned = returned_pair(record)
    view = {"returned": (_g4(returned[0]), returned[1]) if returned else record.get("returned"),
            "scale": record.get("scale"), "lr": _g4(record.get("lr"))}
    params = record.get("params")
    if type(params) is list and all(isinstance(p, torch.Tensor) for p in params):
        moved = sum(float(((p - q).double() ** 2).sum()) for p, q in zip(params, initial))
        view["weight change (L2)"] = _g4(math.sqrt(moved))
    return view


FIELD_CAUSES = {
    "type": "return a tuple (loss, skipped): the loss a Python float (loss.item(), or the mean of "
            "the micro-batch losses as floats), skipped a Python bool (wrap it: bool(...)).",
    "loss": "return the mean of the micro-batch losses, each mse_loss(model(x), y) computed under "
            "autocast, before dividing by n and before scaling.",
    "skipped": "skipped is True exactly when scaler.step skipped optimizer.step(), because a "
               "gradient was inf or NaN after this window.",
    "scale": "call scaler.update() exactly once per window, after scaler.step(optimizer), also "
             "when the step was skipped.",
    "lr": "call scheduler.step() once after a window whose optimizer step happened, and not after "
          "a skipped one: the schedule counts optimizer steps.",
    "params": "compare your window with the contract: zero_grad once, scaler.scale(loss / n)."
              "backward() for each micro-batch, then once: unscale_, clip (only with max_grad_norm), "
              "scaler.step, scaler.update.",
    "windows": "the driver got fewer windows back than it ran: return from every call.",
}


def diagnose(params, setup, windows, max_norm, got, fields) -> str:
    """The first known mistake whose run matches the learner's, else the field's cause."""
    where = first_difference(reference_run(params, setup, windows, max_norm), got, fields)
    for mistake, text in MISTAKES.items():
        if first_difference(reference_run(params, setup, windows, max_norm, mistake), got, fields) is None:
            return text
    return FIELD_CAUSES[where[1]] if where else FIELD_CAUSES["params"]


def _case_text(setup: dict, windows: list, max_norm, upto: int) -> str:
    shape = ", ".join(f"{len(w)}{'*' if any(bool(torch.isinf(y).any()) for _, y in w) else ''}"
                      for w in windows[:upto + 1])
    init = setup["init_scale"]
    init_text = f"2**{int(math.log2(init))}" if math.log2(init).is_integer() else f"{init:g}"
    return (f"SGD(lr={setup['lr']}), warm-up LR over {setup['warmup']} steps, GradScaler('cpu', "
            f"init_scale={init_text}, growth_interval={setup['growth_interval']}), "
            f"max_grad_norm={max_norm}; micro-batches per window: {shape} (* = an inf target); "
            f"window {upto + 1} is the first that differs")


# -- talking to the worker ------------------------------------------------------------------

ORDER_ERRORS = {
    "unscale_() has already been called": "scaler.unscale_(optimizer) runs once per window, after "
                                          "the last micro-batch's backward, not once per micro-batch.",
    "step() has already been called": "scaler.step(optimizer) runs once per window and must be "
                                      "followed by scaler.update() before the next window.",
    "unscale_() is being called after step()": "unscale_ comes before scaler.step(optimizer), "
                                               "once per window.",
}


def run_learner(learner, params, setup, windows, max_norm) -> list[dict]:
    learner.run(DRIVER)
    try:
        return learner.call("_mp05_run", params, setup, windows, max_norm)
    except LearnerRaised as raised:
        for text, cause in ORDER_ERRORS.items():
            if not raised.not_implemented and text in raised.message:
                raise CheckFailed("amp_train_window runs window after window with one scaler",
                                  f"{len(windows)} windows of {[len(w) for w in windows]} micro-batches",
                                  "no error", raised.message.splitlines()[-1][:200], cause=cause)
        raise


def check_run(learner, checked: str, params, setup, windows, max_norm=None,
              fields=("type", "skipped", "loss", "scale", "lr", "params")) -> list[dict]:
    got = run_learner(learner, params, setup, windows, max_norm)
    expected = reference_run(params, setup, windows, max_norm)
    if type(got) is not list:
        raise CheckFailed(checked, "the grader's driver got an unexpected result back",
                          f"{len(windows)} records", got, cause=FIELD_CAUSES["windows"])
    where = first_difference(expected, got, fields)
    if where is not None:
        i, field = where
        if field == "windows":
            raise CheckFailed(checked, f"{len(windows)} windows", len(expected), len(got),
                              cause=FIELD_CAUSES["windows"])
        raise CheckFailed(f"{checked} ({field!r} differs after window {i + 1})",
                          _case_text(setup, windows, max_norm, i),
                          _view(expected[i], params), _view(got[i], params),
                          cause=diagnose(params, setup, windows, max_norm, got, fields))
    return expected


def _setup(lr=0.1, warmup=4, init_scale=2.0**16, growth_interval=2000) -> dict:
    return {"lr": lr, "warmup": warmup, "init_scale": init_scale, "growth_interval": growth_interval}


# -- the checks ----------------------------------------------------------------------------

@exercise(EXERCISE, points=1)
def test_returns_the_mean_micro_batch_loss_and_whether_it_was_skipped(learner, seed):
    """One window returns (mean of the micro-batch losses, False), under bfloat16 autocast."""
    params, windows = _draw(seed, "05.loss", (2, 4))
    check_run(learner, "amp_train_window returns (the mean micro-batch loss, skipped)",
              params, _setup(), windows[:1], fields=("type", "loss", "skipped"))


@exercise(EXERCISE, points=2)
def test_accumulated_gradients_give_one_step_on_the_mean_loss(learner, seed):
    """Clean windows of 1, 2 and 4 micro-batches match the reference step for step."""
    params, windows = _draw(seed, "05.accumulate", (1, 2, 4, 2))
    # A small init_scale makes leftover gradients visible: the unscaled gradients of the
    # previous window are not dwarfed by the new, scaled ones.
    check_run(learner, "accumulated windows give the same step as torch AMP on the mean loss",
              params, _setup(init_scale=2.0, growth_interval=2), windows)


@exercise(EXERCISE, points=2)
def test_clips_the_unscaled_gradients_once_per_window(learner, seed):
    """With max_grad_norm, the unscaled accumulated gradients are clipped before the step."""
    params, windows = _draw(seed, "05.clip", (2, 4, 2))
    max_norm = pick(st.sampled_from([0.1, 0.2, 0.5]), seed, "05.clip.norm")
    check_run(learner, "windows with clipping give the same step as torch AMP",
              params, _setup(), windows, max_norm=max_norm)


@exercise(EXERCISE, points=2)
def test_a_window_with_an_inf_is_skipped_and_the_schedule_waits(learner, seed):
    """An inf in one micro-batch skips the window's step, backs off the scale and holds the LR."""
    params, windows = _draw(seed, "05.inf", (2, 4, 2, 4), inf_windows=1)
    check_run(learner, "a window with an inf target is skipped; training then continues",
              params, _setup(growth_interval=2), windows, max_norm=0.5)


@exercise(EXERCISE, points=1)
def test_a_step_skipped_by_the_scaler_is_skipped_even_with_a_finite_loss(learner, seed):
    """A scale so large that the scaled gradients overflow skips steps whose loss is finite."""
    params, windows = _draw(seed, "05.overflow", (1, 2) * 5, big_targets=True)
    expected = check_run(learner, "windows whose scaled gradients overflow are skipped, "
                                  "and only real steps advance the schedule",
                         params, _setup(init_scale=2.0**127), windows)
    assert any(skipped and math.isfinite(loss) for loss, skipped in (r["returned"] for r in expected)), \
        "the overflow case must skip a step with a finite loss"


@exercise(EXERCISE, points=2)
def test_a_long_run_matches_torch_amp_window_for_window(learner, seed):
    """Eight windows with drawn sizes, infs, clipping and scale growth match the reference."""
    params, windows = _draw(seed, "05.long", (1, 2, 4, 2, 4, 1, 2, 4), inf_windows=2)
    init_scale, max_norm = pick(st.tuples(st.sampled_from([2.0**4, 2.0**16]),
                                          st.sampled_from([None, 0.2, 1.0])), seed, "05.long.setup")
    check_run(learner, "eight windows match torch AMP window for window",
              params, _setup(init_scale=init_scale, growth_interval=2), windows, max_norm=max_norm)


