"""Hidden checks for lesson 05: `train_step`, the canonical AMP step (8 pts).

A tiny MLP is built in the worker from weights drawn here, the learner's
`train_step` runs a few steps on batches drawn here, and the parameters, the
scale and the growth tracker come back as plain tensors. The same steps run in
this process with `torch.amp.GradScaler("cpu")` (the reference). When the two
disagree, the learner's result is also compared with a few known mistakes
(clipping before unscaling, a plain optimizer.step(), no zero_grad, no
autocast) so that the message can name the likely one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from grader.checkkit import CheckFailed, LearnerRaised, draw, exercise
from grader.wire import Ref

IN, HIDDEN, OUT = 8, 16, 4
LR = 0.05

# torch.optim.SGD(lr) without momentum computes p.add_(grad, alpha=-lr), exactly
# as below; building a torch.optim optimizer costs seconds of imports (dynamo),
# on both sides of the boundary, and the contract only needs param_groups,
# zero_grad() and step(), which GradScaler uses.
PLAIN_SGD = '''
class PlainSGD:
    """SGD without momentum: the interface GradScaler and train_step use."""

    def __init__(self, params, lr):
        self.param_groups = [{"params": list(params), "lr": lr}]

    def zero_grad(self, set_to_none=True):
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def step(self):
        lr = self.param_groups[0]["lr"]
        with _mp_torch.no_grad():
            for p in self.param_groups[0]["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-lr)
'''

_namespace = {"_mp_torch": torch}
exec(PLAIN_SGD, _namespace)
PlainSGD = _namespace["PlainSGD"]

HELPER = f'''
import torch as _mp_torch
{PLAIN_SGD}

def _mp_build(params, lr, init_scale, growth_interval):
    global _mp_model, _mp_opt, _mp_scaler, _mp_dtypes
    nn = _mp_torch.nn
    _mp_model = nn.Sequential(nn.Linear({IN}, {HIDDEN}), nn.ReLU(), nn.Linear({HIDDEN}, {OUT}))
    with _mp_torch.no_grad():
        for p, value in zip(_mp_model.parameters(), params):
            p.copy_(value)
    _mp_opt = PlainSGD(_mp_model.parameters(), lr=lr)
    _mp_scaler = _mp_torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=growth_interval)
    _mp_dtypes = []
    for layer in (_mp_model[0], _mp_model[2]):
        layer.register_forward_hook(lambda m, i, out: _mp_dtypes.append(str(out.dtype)))

def _mp_state():
    scale = _mp_scaler._scale
    tracker = _mp_scaler._growth_tracker
    return {{"params": [p.detach().clone() for p in _mp_model.parameters()],
            "scale": float(scale) if scale is not None else float(_mp_scaler.get_scale()),
            "tracker": int(tracker) if tracker is not None else 0,
            "dtypes": list(_mp_dtypes)}}
'''

NOT_RUN = "not implemented yet"


# -- the setting, drawn ------------------------------------------------------------

def _setting(seed: int, key: str):
    """Initial weights and batches, from a drawn seed and batch size."""
    case = draw(st.tuples(st.integers(0, 2**31 - 1), st.sampled_from([8, 12, 16])),
                n=1, seed=seed, key=key)[0]
    g = torch.Generator().manual_seed(case[0])
    params = [torch.randn(HIDDEN, IN, generator=g) * 0.4, torch.randn(HIDDEN, generator=g) * 0.1,
              torch.randn(OUT, HIDDEN, generator=g) * 0.3, torch.randn(OUT, generator=g) * 0.1]
    batches = [(torch.randn(case[1], IN, generator=g), torch.randn(case[1], OUT, generator=g))
               for _ in range(4)]
    return params, batches


def _with_inf(batch):
    x, y = batch[0].clone(), batch[1].clone()
    y[0, 0] = math.inf
    return x, y


# -- the reference, and the usual mistakes ---------------------------------------

def reference(params, batches, max_norm=None, init_scale=2.0**16, growth_interval=2000,
              mistake: str | None = None):
    """Run the canonical AMP step on CPU (bf16) and return what `_mp_state` returns."""
    nn = torch.nn
    model = nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT))
    with torch.no_grad():
        for p, value in zip(model.parameters(), params):
            p.copy_(value)
    opt = PlainSGD(model.parameters(), lr=LR)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=growth_interval)
    losses = []
    for x, y in batches:
        if mistake != "no_zero_grad":
            opt.zero_grad(set_to_none=True)
        dtype = torch.float16 if mistake == "float16_on_cpu" else torch.bfloat16
        with torch.autocast("cpu", dtype=dtype, enabled=mistake != "no_autocast"):
            loss = F.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        if max_norm is not None and mistake != "no_clip":
            if mistake == "clip_first":
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            scaler.unscale_(opt)
            if mistake != "clip_first":
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if mistake == "optimizer_step":
            if max_norm is None:
                scaler.unscale_(opt)
            opt.step()
        else:
            scaler.step(opt)
        scaler.update()
        losses.append(float(loss))
    return {"params": [p.detach().clone() for p in model.parameters()],
            "scale": float(scaler._scale), "tracker": int(scaler._growth_tracker), "losses": losses}


MISTAKES = {
    "clip_first": "you clip before scaler.unscale_(optimizer): the gradients are still multiplied by "
                  "the scale (65536), so clipping shrinks them far too much. Call "
                  "scaler.unscale_(optimizer) first, then clip_grad_norm_.",
    "no_clip": "max_grad_norm was ignored: when it is not None, call scaler.unscale_(optimizer) and then "
               "torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm).",
    "optimizer_step": "you call optimizer.step() yourself, which steps even when a gradient is inf/NaN; "
                      "use scaler.step(optimizer), which skips that step.",
    "no_zero_grad": "gradients add up across calls: start every step with "
                    "optimizer.zero_grad(set_to_none=True).",
    "no_autocast": "the forward pass ran in float32: wrap the forward pass and the loss in "
                   "torch.autocast(device_type, dtype=...) (bfloat16 on a CPU model).",
    "float16_on_cpu": "the forward pass ran in float16 on a CPU model: the contract asks for "
                      "bfloat16 whenever the device type is not 'cuda'.",
}


def _close(a, b) -> bool:
    if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(torch.allclose(a, b, rtol=1e-5, atol=1e-7, equal_nan=True))


def _same_params(expected: list, got) -> bool:
    return (isinstance(got, list) and len(got) == len(expected)
            and all(_close(e, g) for e, g in zip(expected, got)))


def _diagnose(params, batches, got_params, max_norm=None, **kw) -> str:
    for mistake, text in MISTAKES.items():
        if _same_params(reference(params, batches, max_norm, mistake=mistake, **kw)["params"],
                        got_params):
            return text
    return ("compare your step with the canonical loop in section 3: zero_grad, autocast forward and "
            "loss, scaler.scale(loss).backward(), unscale_ then clip (only with max_grad_norm), "
            "scaler.step(optimizer), scaler.update().")


# -- talking to the worker ------------------------------------------------------------

def _run(learner, params, batches, max_norm=None, init_scale=2.0**16, growth_interval=2000,
         snapshots: bool = False):
    """Build the model in the worker, run train_step on each batch; return losses and state(s)."""
    learner.run(HELPER)
    learner.call("_mp_build", params, LR, init_scale, growth_interval)
    losses, states = [], []
    for batch in batches:
        outcome = learner.map("train_step", [(Ref("_mp_model"), batch, Ref("_mp_opt"),
                                              Ref("_mp_scaler"), max_norm)])[0]
        if not outcome.ok:
            _explain_raise(outcome.raised)
        losses.append(outcome.value)
        if snapshots:
            states.append(learner.call("_mp_state"))
    final = states[-1] if snapshots else learner.call("_mp_state")
    return losses, final, states


def _explain_raise(raised: LearnerRaised):
    if not raised.not_implemented and ("update()" in raised.message
                                       or "after step()" in raised.message):
        raise CheckFailed(
            "train_step can be called several times in a row",
            "a second call to train_step with the same optimizer and scaler",
            "no error", raised.message.splitlines()[-1][:200],
            cause="GradScaler refuses a second step()/unscale_() until update() has run: end "
                  "every train_step with scaler.update().")
    raise raised


def _g4(x: float) -> float:
    return float(f"{x:.4g}")


def _change(initial: list, params) -> float:
    """The L2 norm of the change of all parameters: how far training moved the model."""
    if not (isinstance(params, list) and all(isinstance(p, torch.Tensor) for p in params)):
        return math.nan
    return _g4(math.sqrt(sum(float(((p - q).double() ** 2).sum()) for p, q in zip(params, initial))))


def _views(initial: list, expected: dict, got: dict) -> tuple[dict, dict]:
    """Plain summaries of two states for a message: how far the weights moved, and the scale."""
    exp = {"weight change (L2)": _change(initial, expected["params"]), "scale": expected["scale"]}
    got_view = {"weight change (L2)": _change(initial, got.get("params")), "scale": got.get("scale")}
    if _same_shapes(expected["params"], got.get("params")):
        got_view["max |weight error|"] = _g4(max(float((e - g).abs().max())
                                                 for e, g in zip(expected["params"], got["params"])))
    return exp, got_view


def _same_shapes(expected: list, got) -> bool:
    return (isinstance(got, list) and len(got) == len(expected)
            and all(isinstance(g, torch.Tensor) and g.shape == e.shape for e, g in zip(expected, got)))


def _check_state(what: str, case: str, expected: dict, got: dict, params, batches,
                 max_norm=None, **kw):
    if not _same_params(expected["params"], got["params"]):
        exp_view, got_view = _views(params, expected, got)
        raise CheckFailed(what, case, exp_view, got_view,
                          cause=_diagnose(params, batches, got["params"], max_norm, **kw))
    if (got.get("scale"), got.get("tracker")) != (expected["scale"], expected["tracker"]):
        raise CheckFailed(what + " (the scaler's state)", case,
                          {"scale": expected["scale"], "growth_tracker": expected["tracker"]},
                          {"scale": got["scale"], "growth_tracker": got["tracker"]},
                          cause="call scaler.update() exactly once per train_step, after "
                                "scaler.step(optimizer), also when the step was skipped.")


# -- the checks --------------------------------------------------------------------------

@exercise("train_step", points=1)
def test_returns_the_unscaled_loss_as_a_float(learner, seed):
    """train_step returns float(loss), the MSE before scaling."""
    params, batches = _setting(seed, "05.loss")
    losses, _, _ = _run(learner, params, batches[:2])
    expected = reference(params, batches[:2])["losses"]
    for i, (e, g) in enumerate(zip(expected, losses)):
        if type(g) is not float:
            raise CheckFailed("train_step returns a Python float", f"step {i + 1} of a tiny MLP",
                              e, g, cause="return float(loss) (or loss.item()), not the tensor.")
        if not math.isclose(e, g, rel_tol=1e-6):
            cause = ("return mse_loss(model(x), y) computed under autocast, with the default mean "
                     "reduction, before the optimizer step.")
            if math.isclose(g, e * 2.0**16, rel_tol=1e-3):
                cause = "you returned the scaled loss; return the loss before scaler.scale()."
            for mistake in ("no_autocast", "float16_on_cpu"):
                if math.isclose(g, reference(params, batches[:2], mistake=mistake)["losses"][i],
                                rel_tol=1e-6):
                    cause = MISTAKES[mistake]
            raise CheckFailed("train_step returns the unscaled MSE loss", f"step {i + 1} of a tiny MLP",
                              e, g, cause=cause)


@exercise("train_step", points=1)
def test_forward_runs_under_bfloat16_autocast_on_cpu(learner, seed):
    """On a CPU model, the forward pass runs under bfloat16 autocast."""
    params, batches = _setting(seed, "05.dtype")
    _, state, _ = _run(learner, params, batches[:1])
    dtypes = state["dtypes"]
    if not dtypes or any(d != "torch.bfloat16" for d in dtypes):
        raise CheckFailed("the Linear layers run in bfloat16 under autocast on a CPU model",
                          "one train_step on a float32 MLP on the CPU",
                          ["torch.bfloat16", "torch.bfloat16"], dtypes or "(no forward pass)",
                          cause="take the device type from next(model.parameters()).device.type and "
                                "use torch.autocast(device_type, dtype=torch.bfloat16) when it is "
                                "not 'cuda' (float16 is for CUDA).")


@exercise("train_step", points=2)
def test_clean_steps_match_torch_amp(learner, seed):
    """Four clean steps match the canonical AMP loop: parameters, scale and growth tracker."""
    params, batches = _setting(seed, "05.clean")
    # A small init_scale makes a missing zero_grad visible: leftover unscaled gradients
    # are not dwarfed by the new, scaled ones.
    _, state, _ = _run(learner, params, batches, init_scale=2.0, growth_interval=3)
    expected = reference(params, batches, init_scale=2.0, growth_interval=3)
    _check_state("four clean steps give the same parameters as torch AMP",
                 "SGD(lr=0.05), GradScaler('cpu', init_scale=2, growth_interval=3), 4 batches",
                 expected, state, params, batches, init_scale=2.0, growth_interval=3)


@exercise("train_step", points=2)
def test_clips_gradients_after_unscaling(learner, seed):
    """With max_grad_norm, the unscaled gradients are clipped before the step."""
    params, batches = _setting(seed, "05.clip")
    _, state, _ = _run(learner, params, batches[:3], max_norm=1e-3)
    expected = reference(params, batches[:3], max_norm=1e-3)
    _check_state("three steps with max_grad_norm=1e-3 give the same parameters as torch AMP",
                 "SGD(lr=0.05), GradScaler('cpu'), clipping to a total norm of 1e-3",
                 expected, state, params, batches[:3], max_norm=1e-3)


@exercise("train_step", points=1)
def test_skips_the_step_and_backs_off_on_inf(learner, seed):
    """A batch with an inf target leaves the weights unchanged and halves the scale."""
    params, batches = _setting(seed, "05.inf")
    run = [batches[0], _with_inf(batches[1]), batches[2]]
    losses, _, states = _run(learner, params, run, max_norm=0.5, snapshots=True)
    expected = reference(params, run[:2], max_norm=0.5)
    if not _same_params(expected["params"], states[1]["params"]):
        nan = any(bool(torch.isnan(p).any()) for p in states[1]["params"]
                  if isinstance(p, torch.Tensor))
        exp_view, got_view = _views(params, expected, states[1])
        raise CheckFailed("after a batch whose loss is inf, the parameters are unchanged",
                          "step 1 clean, step 2 with y[0, 0] = inf (max_grad_norm=0.5)",
                          exp_view, got_view,
                          cause=(MISTAKES["optimizer_step"] if nan else
                                 _diagnose(params, run[:2], states[1]["params"], 0.5)))
    if states[1]["scale"] != expected["scale"]:
        raise CheckFailed("the scale halves after an overflow",
                          "step 1 clean, step 2 with y[0, 0] = inf",
                          expected["scale"], states[1]["scale"],
                          cause="call scaler.update() on every call, also when the step was "
                                "skipped (do not return early on a non-finite loss).")
    if not (isinstance(losses[1], float) and math.isinf(losses[1])):
        raise CheckFailed("the overflowing step still returns its loss", "step 2 with y[0, 0] = inf",
                          math.inf, losses[1], cause="return float(loss), even when it is inf.")
    full = reference(params, run, max_norm=0.5)
    _check_state("training continues normally after the skipped step",
                 "steps 1..3 with an inf target in step 2", full, states[2], params, run, 0.5)


@exercise("train_step", points=1)
def test_scale_grows_after_growth_interval_clean_steps(learner, seed):
    """The scale doubles after growth_interval clean steps, via scaler.update()."""
    params, batches = _setting(seed, "05.grow")
    _, _, states = _run(learner, params, batches[:3], init_scale=1024.0, growth_interval=2,
                        snapshots=True)
    got = [(s["scale"], s["tracker"]) for s in states]
    expected = [(1024.0, 1), (2048.0, 0), (2048.0, 1)]
    if got != expected:
        raise CheckFailed("(scale, growth_tracker) after each of three clean steps",
                          "GradScaler('cpu', init_scale=1024, growth_interval=2)", expected, got,
                          cause="call scaler.update() exactly once at the end of every train_step; "
                                "do not create a new GradScaler inside train_step.")
