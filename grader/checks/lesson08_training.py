"""Lesson 08, Exercise 8.2: the reference run of `train_accumulated`, and the first difference.

`reference_run` replays a plain-data case in the trusted process with a real
`torch.amp.GradScaler("cpu")` (or with one known mistake, to name it).
`compare_training` walks the learner's run in time order (the parameters
before each micro-batch, then each window's record) to the first difference
and returns it as a CheckFailed with a likely cause.
"""

from __future__ import annotations

import math

import torch

from grader.checkkit import CheckFailed
from grader.checks.lesson08_models import TRAINING, load, single_thread

REL_TOL = 1e-5  # losses and parameter checksums; scales, flags and learning rates are exact

_training = load(TRAINING)

MISTAKES = {
    "no_divide": "divide each micro-batch's loss by accumulation_steps before scaler.scale(...): "
                 "the window's summed gradient must be the gradient of the mean loss, and without "
                 "the division the update is accumulation_steps times too big",
    "clip_before_unscale": "clip after scaler.unscale_(optimizer): clipping the scaled gradients "
                           "compares a norm thousands of times too big with max_grad_norm",
    "no_clip": "max_grad_norm was ignored: after scaler.unscale_(optimizer), call "
               "torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)",
    "zero_grad_every_micro_batch": "zero the gradients once per window, at its start: zeroing "
                                   "before every micro-batch keeps only the last one's gradient",
    "no_zero_grad": "start every window with optimizer.zero_grad(set_to_none=True): the previous "
                    "window's gradients were added to this one's",
}


def reference_run(case: dict, mistake: str | None = None) -> dict:
    """The exercise's loop with torch.amp.GradScaler, or with one known mistake; cached."""
    key = (repr(sorted(case.items())), mistake)
    if key not in _runs:
        _runs[key] = _reference_run(case, mistake)
    return _runs[key]


_runs: dict[tuple, dict] = {}


def _reference_run(case: dict, mistake: str | None) -> dict:
    with single_thread():
        return _replay(case, mistake)


def _replay(case: dict, mistake: str | None) -> dict:
    model, optimizer, scheduler, scaler, micro = _training["_g08_setup"](case)
    checksum = _training["_g08_checksum"]
    seen: list = []
    model.register_forward_pre_hook(lambda module, args: seen.append(checksum(module)))
    k, dtype, clip = case["accumulation_steps"], getattr(torch, case["dtype"]), case["max_grad_norm"]
    records = []
    for start in range(0, len(micro), k):
        if mistake != "no_zero_grad":
            optimizer.zero_grad(set_to_none=True)
        losses = []
        for x, y in micro[start:start + k]:
            if mistake == "zero_grad_every_micro_batch":
                optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=dtype):
                loss = model(x, y)
            scaler.scale(loss if mistake == "no_divide" else loss / k).backward()
            losses.append(float(loss.detach()))
        if clip is not None and mistake == "clip_before_unscale":
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.unscale_(optimizer)
        if clip is not None and mistake not in ("clip_before_unscale", "no_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scale, lr = scaler.get_scale(), float(optimizer.param_groups[0]["lr"])
        scaler.step(optimizer)
        scaler.update()
        skipped = scaler.get_scale() < scale
        if not skipped:
            scheduler.step()
        records.append({"loss": sum(losses) / len(losses), "scale": scale, "skipped": skipped,
                        "lr": lr, "scale_after": scaler.get_scale(),
                        "lr_after": float(optimizer.param_groups[0]["lr"])})
    final = checksum(model)
    return {"records": records, "checksums": seen, "final": final, "trajectory": seen + [final]}


def describe_case(case: dict) -> str:
    k, w = case["accumulation_steps"], case["windows"]
    text = (f"{w} windows of {k} micro-batches ({case['rows']} rows each), {case['dtype']} autocast, "
            f"GradScaler('cpu', init_scale={case['init_scale']:g}, growth_interval="
            f"{case['growth_interval']}), SGD(lr={case['lr']}), a scheduler that halves the lr at "
            "every step()")
    if case["max_grad_norm"] is not None:
        text += f", max_grad_norm={case['max_grad_norm']}"
    for i in case["inf_at"]:
        text += f", an inf in micro-batch {i % k + 1} of window {i // k + 1}"
    return text


def _close(a, b) -> bool:
    if type(a) is not float or type(b) is not float:
        return False
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9)


def _same_checksum(a, b) -> bool:
    return type(b) is list and len(b) == 2 and all(_close(x, y) for x, y in zip(a, b))


def _checksum_view(c) -> dict:
    if type(c) is list and len(c) == 2 and all(type(v) is float for v in c):
        return {"sum": float(f"{c[0]:.7g}"), "sum of squares": float(f"{c[1]:.7g}")}
    return c


def _record_view(r: dict) -> dict:
    return {key: r.get(key) for key in ("loss", "scale", "skipped", "lr")}


def _record_problem(exp: dict, got, k: int, prev: dict | None) -> str | None:
    """The likely cause when one window's record differs, or None when it matches."""
    if type(got) is not dict or not {"loss", "scale", "skipped", "lr"} <= set(got):
        return "each record is a dict with the keys 'loss', 'scale', 'skipped' and 'lr'"
    for key, kind in (("loss", float), ("scale", float), ("skipped", bool), ("lr", float)):
        if type(got[key]) is not kind:
            return (f"record[{key!r}] is a {type(got[key]).__name__}; make it a Python {kind.__name__}"
                    + (" (float(loss) or loss.item())" if key == "loss" else ""))
    if got["skipped"] != exp["skipped"]:
        if got["skipped"] and exp["scale_after"] > exp["scale"]:
            return ("update() grew the scale here, which is not a skip: a step was skipped only "
                    "when update() lowered the scale (scaler.get_scale() < the scale before)")
        if exp["skipped"]:
            return ("this window's gradients overflowed and scaler.step skipped the step (update() "
                    f"backed the scale off from {exp['scale']:g} to {exp['scale_after']:g}): report "
                    "skipped=True when the scale read after scaler.update() is below the one read "
                    "before the step (before update(), get_scale() has not changed yet)")
        return "skipped is True only when update() lowered the scale"
    if got["scale"] != exp["scale"]:
        if got["scale"] == exp["scale_after"]:
            return "record the scale before scaler.update(): the one this window's backward passes used"
        return "record scaler.get_scale() as this window's backward passes used it"
    if got["lr"] != exp["lr"]:
        if prev is not None and prev["skipped"] and got["lr"] == prev["lr_after"] * 0.5:
            return ("the scheduler stepped after a skipped window: call scheduler.step() only when "
                    "the optimizer really stepped, or the schedule runs ahead of the weights")
        if got["lr"] == exp["lr_after"]:
            return "record the learning rate the step used: read it before scheduler.step()"
        return "record optimizer.param_groups[0]['lr'] as it was during this window's step"
    if not _close(exp["loss"], got["loss"]):
        if _close(exp["loss"] / k, got["loss"]):
            return "record the mean of the undivided micro-batch losses, not loss / accumulation_steps"
        return "record the mean over the window's micro-batches of float(model(x, y))"
    return None


def _applicable(case: dict) -> dict:
    clipping = case["max_grad_norm"] is not None
    return {m: c for m, c in MISTAKES.items() if clipping or m not in ("no_clip", "clip_before_unscale")}


def _record_mistake(case: dict, records: list, w: int) -> str | None:
    """A known mistake whose run has the learner's records up to window w, if one does."""
    k, right = case["accumulation_steps"], reference_run(case)["records"][w]
    for mistake, cause in _applicable(case).items():
        variant = reference_run(case, mistake)["records"]
        if _record_problem(right, variant[w], k, None) is not None and all(
                _record_problem(variant[i], records[i], k, None) is None for i in range(w + 1)):
            return cause
    return None


def _step_cause(case: dict, got_sums: list, upto: int) -> str:
    """Why the parameters after a step differ: match the run so far with a known mistake.

    `got_sums` is the learner's trajectory: the checksum before each micro-batch, then the final one.
    """
    right = reference_run(case)["trajectory"][:upto]
    for mistake, cause in _applicable(case).items():
        sums = reference_run(case, mistake)["trajectory"][:upto]
        if sums != right and all(_same_checksum(a, b) for a, b in zip(sums, got_sums[:upto])):
            return cause
    if upto >= 2 and _same_checksum(got_sums[upto - 2], got_sums[upto - 1]):
        return ("the parameters did not move in this step: run scaler.step(optimizer) once per "
                "window, after its last micro-batch")
    return ("compare your window with the recipe: zero_grad at its start, scale(loss / "
            "accumulation_steps).backward() per micro-batch, then unscale_, clip, step, update")


def compare_training(case: dict, got: dict, checked: str) -> CheckFailed | None:
    """The first difference between the learner's run and the reference, as a CheckFailed."""
    ref = reference_run(case)
    k, windows = case["accumulation_steps"], case["windows"]
    about = describe_case(case)
    records, sums = got.get("records"), got.get("checksums")
    if type(records) is not list or len(records) != windows:
        n = len(records) if type(records) is list else records
        return CheckFailed(checked, about, f"a list of {windows} records", n,
                           cause="return one dict per window (per optimizer step), not per micro-batch")
    if type(sums) is not list or len(sums) != windows * k:
        return CheckFailed(checked, about, f"{windows * k} forward passes", f"{len(sums)} forward passes",
                           cause="call model(x, y) exactly once per micro-batch")
    for w in range(windows):
        for j in range(k):
            i = w * k + j
            if _same_checksum(ref["checksums"][i], sums[i]):
                continue
            where = f"{about}. The parameters before micro-batch {j + 1} of window {w + 1}"
            if j > 0 and not _same_checksum(sums[i - 1], sums[i]):
                cause = ("the parameters changed in the middle of a window: call unscale_, step and "
                         "update only after the window's last micro-batch, once per window")
            else:
                cause = _step_cause(case, sums, i + 1)
            return CheckFailed(checked, where + " are the first thing that differs.",
                               _checksum_view(ref["checksums"][i]), _checksum_view(sums[i]), cause)
        problem = _record_problem(ref["records"][w], records[w], k, ref["records"][w - 1] if w else None)
        if problem:
            problem = _record_mistake(case, records, w) or problem
            return CheckFailed(checked, f"{about}. The record of window {w + 1} is the first thing "
                                        "that differs.",
                               _record_view(ref["records"][w]), records[w], problem)
    if not _same_checksum(ref["final"], got.get("final")):
        return CheckFailed(checked, f"{about}. The parameters after the last window differ.",
                           _checksum_view(ref["final"]), _checksum_view(got.get("final")),
                           _step_cause(case, sums + [got.get("final")], len(sums) + 1))
    return None
