"""Hidden checks for lesson 08: `first_nonfinite` (5 pts) and `train_accumulated` (5 pts).

Both exercises run on models that a grader-authored source (`lesson08_models`)
builds from plain-data specs. The worker builds them next to the learner's code
and reports plain answers; this process builds identical models from the same
specs and computes the expected answers itself: with forward hooks for
`first_nonfinite`, and with a real `torch.amp.GradScaler("cpu")` for
`train_accumulated`. When an answer differs, the message names the first point
where it does and a likely cause, worked out from what the learner's run shows
there (see `lesson08_first_nonfinite` and `lesson08_training`).
"""

from __future__ import annotations

from hypothesis import strategies as st

from grader.checkkit import CheckFailed, draw, exercise
from grader.checks.lesson08_first_nonfinite import describe_spec, first_nonfinite_trace
from grader.checks.lesson08_models import FIRST_NONFINITE_DRIVER, TRAINING_DRIVER
from grader.checks.lesson08_training import compare_training, reference_run

FIRST, TRAIN = "first_nonfinite", "train_accumulated"

# -- Exercise 8.1: first_nonfinite ------------------------------------------------------

# Where each kind of block can be broken, and how (see lesson08_models._g08_break).
BREAKS = {
    "mlp": [("0", "nan_weight"), ("2", "nan_weight"), ("0", "huge_weight"), ("2", "huge_weight")],
    "softmax": [("0", "sharpen"), ("0", "nan_weight")],
    "norm": [("0", "offset")],
    "gain": [("", "gain")],
    "attention": [("", "logits"), ("qkv", "nan_weight"), ("proj", "nan_weight")],
    "residual": [("inner.1", "nan_weight"), ("inner.1", "huge_weight")],
    "swapped": [("first", "nan_weight"), ("second", "huge_weight")],
}
ROOT_BREAKS = [("out", "huge_weight")]


def spec(kinds, breaks=(), root_exp=False, seed=0, width=8) -> dict:
    return {"seed": seed, "width": width, "kinds": list(kinds), "root_exp": root_exp,
            "breaks": [list(b) for b in breaks]}


@st.composite
def broken_specs(draw_):
    kinds = draw_(st.lists(st.sampled_from(sorted(BREAKS)), min_size=1, max_size=4))
    options = [(f"blocks.{i}" + (f".{target}" if target else ""), how)
               for i, kind in enumerate(kinds) for target, how in BREAKS[kind]] + ROOT_BREAKS
    breaks = draw_(st.lists(st.sampled_from(options), min_size=1, max_size=2, unique=True))
    return spec(kinds, breaks, root_exp=draw_(st.sampled_from([False, False, False, True])),
                seed=draw_(st.integers(0, 2**31 - 1)), width=draw_(st.sampled_from([8, 16])))


# Kinds that stay finite unbroken (a naive softmax or a one-pass norm can fail on its own).
healthy_specs = st.builds(lambda kinds, seed, width: spec(kinds, seed=seed, width=width),
                          st.lists(st.sampled_from(["attention", "gain", "mlp", "residual", "swapped"]),
                                   min_size=1, max_size=4),
                          st.integers(0, 2**31 - 1), st.sampled_from([8, 16]))

# Hand-picked: the answer is a module whose own code (not a child's) makes the inf or NaN.
OWN_CODE = [
    spec(["attention", "mlp"], [("blocks.0", "logits")]),           # "blocks.0": inline logits
    spec(["mlp", "gain", "mlp"], [("blocks.1", "gain")], seed=3),   # "blocks.1": a tuple output
    spec(["mlp"], root_exp=True, seed=1),                            # "": the root's own exp
    spec(["norm", "mlp"], [("blocks.0.0", "offset")], seed=2),       # "blocks.0.1": a custom leaf
]
# Hand-picked: several modules go non-finite, and the order they finish in decides.
ORDER = [
    spec(["swapped"], [("blocks.0.first", "nan_weight")], seed=4),       # registered after `second`
    spec(["residual", "mlp"], [("blocks.0.inner.1", "nan_weight")], seed=5),  # child before parents
    spec(["mlp", "mlp"], [("blocks.1.2", "nan_weight"), ("out", "huge_weight")], seed=6),  # NaN, no inf
    spec(["softmax"], [("blocks.0.0", "sharpen")], seed=7),              # inf / inf = NaN
]


def check_first_nonfinite(learner, specs: list[dict], checked: str, tidy: bool = False) -> None:
    """Compare the learner's answers with the reference; with `tidy`, also hooks and the model."""
    learner.run(FIRST_NONFINITE_DRIVER)
    results = learner.call("__grader_08_first", specs)
    if type(results) is not list or len(results) != len(specs):
        raise CheckFailed(checked, "the grader's driver got an unexpected result back",
                          f"{len(specs)} results", results,
                          cause="first_nonfinite(model, batch) must return a str or None")
    for case, result in zip(specs, results):
        trace = first_nonfinite_trace(case)
        shown = describe_spec(case)
        if "raised" in result:
            raise CheckFailed(checked, shown, trace.expected, f"raised {result['raised']}",
                              cause="first_nonfinite raised on this model: outputs may be tensors or "
                                    "tuples of tensors, and the batch is a tuple of arguments")
        answer = result["answer"]
        if not (answer == trace.expected and type(answer) is type(trace.expected)):
            raise CheckFailed(checked, shown, trace.expected, answer, cause=trace.cause(answer))
        if tidy and result["hooks_left"]:
            raise CheckFailed(checked, shown + " Then the model's hooks were counted.",
                              "0 hooks left", f"{result['hooks_left']} hooks left",
                              cause="remove every hook you register (keep the handles that "
                                    "register_forward_hook returns and call .remove() in a finally: "
                                    "block), or each call leaves hooks that run on every later forward")
        if tidy and not result["unchanged"]:
            raise CheckFailed(checked, shown + " Then the parameters were compared.",
                              "parameters unchanged", "parameters changed",
                              cause="first_nonfinite only watches: run the forward pass under "
                                    "torch.no_grad() and do not modify, cast or move the model")


@exercise(FIRST, points=2)
def test_names_the_first_broken_module_in_drawn_models(learner, seed):
    """Drawn FP16 networks with one or two broken modules: the first non-finite output is named."""
    specs = draw(broken_specs(), n=30, seed=seed, key="08.first")
    check_first_nonfinite(learner, specs, "first_nonfinite names the module where the first inf or "
                                          "NaN is born: the first forward call to finish with finite "
                                          "inputs and a non-finite output")


@exercise(FIRST, points=1)
def test_names_a_module_whose_own_code_makes_the_inf(learner):
    """A non-leaf module, the root, or a tuple output can be the culprit."""
    check_first_nonfinite(learner, OWN_CODE, "first_nonfinite names a module whose own code (not a "
                                             "child's) makes the inf or NaN, the root included")


@exercise(FIRST, points=1)
def test_follows_the_order_forward_calls_finish_in(learner):
    """Children before parents, call order rather than registration order, NaN as well as inf."""
    check_first_nonfinite(learner, ORDER, "first_nonfinite follows the order in which forward calls "
                                          "finish, and counts NaN as well as inf")


@exercise(FIRST, points=1)
def test_healthy_models_give_none_and_no_hooks_are_left(learner, seed):
    """None for finite models; afterwards no hook is left and the parameters are unchanged."""
    specs = draw(healthy_specs, n=6, seed=seed, key="08.healthy") + OWN_CODE[:2] + ORDER[:1]
    check_first_nonfinite(learner, specs, "first_nonfinite returns None when every output is "
                                          "finite, and leaves the model as it found it", tidy=True)


# -- Exercise 8.2: train_accumulated ----------------------------------------------------

def case(seed, accumulation_steps=2, windows=3, dtype="bfloat16", init_scale=2.0**10,
         growth_interval=1000, max_grad_norm=None, inf_at=(), rows=4, lr=0.5) -> dict:
    return {"seed": seed, "accumulation_steps": accumulation_steps, "windows": windows,
            "dtype": dtype, "init_scale": init_scale, "growth_interval": growth_interval,
            "max_grad_norm": max_grad_norm, "inf_at": list(inf_at), "rows": rows, "lr": lr}


seeds = st.integers(0, 2**31 - 1)
clean_cases = st.builds(lambda s, k, d, r: case(s, accumulation_steps=k, dtype=d, rows=r),
                        seeds, st.sampled_from([2, 3, 4]), st.sampled_from(["bfloat16", "float16"]),
                        st.sampled_from([4, 6]))


def check_training(learner, cases: list[dict], checked: str) -> None:
    learner.run(TRAINING_DRIVER)
    results = learner.call("__grader_08_train", cases)
    if type(results) is not list or len(results) != len(cases):
        raise CheckFailed(checked, "the grader's driver got an unexpected result back",
                          f"{len(cases)} results", results,
                          cause="train_accumulated must return a list with one dict per window")
    for c, got in zip(cases, results):
        failure = compare_training(c, got, checked)
        if failure is not None:
            raise failure


@exercise(TRAIN, points=2)
def test_clean_windows_match_a_gradscaler_run(learner, seed):
    """Three windows without overflow: records and parameters match torch AMP, window by window."""
    cases = draw(clean_cases, n=3, seed=seed, key="08.clean")
    check_training(learner, cases, "every window of a run without overflow matches a reference "
                                   "run with torch.amp.GradScaler('cpu'): records and parameters")


@exercise(TRAIN, points=1)
def test_clips_the_unscaled_gradient_of_each_window(learner, seed):
    """With max_grad_norm, each window's summed, unscaled gradient is clipped before the step."""
    s = draw(seeds, n=1, seed=seed, key="08.clip")[0]
    cases = [case(s, windows=2, max_grad_norm=0.05), case(s + 1, accumulation_steps=3, windows=2,
                                                          dtype="float16", max_grad_norm=0.02)]
    check_training(learner, cases, "with max_grad_norm, the window's unscaled gradient is clipped "
                                   "before scaler.step, as in the reference run")


def overflowing_start(seed: int) -> dict:
    """An FP16 case whose scale is too big for the first window(s) but fits in a later one.

    The largest such initial scale is searched here, on the reference run, because
    where FP16 overflows depends on the drawn weights and data.
    """
    for power in range(40, 8, -1):
        c = case(seed, windows=4, dtype="float16", init_scale=2.0**power)
        skipped = [r["skipped"] for r in reference_run(c)["records"]]
        if skipped[0] and not all(skipped):
            return c
    return case(seed, windows=4, dtype="float16", init_scale=2.0**40)


@exercise(TRAIN, points=1)
def test_a_skipped_window_moves_neither_the_model_nor_the_schedule(learner, seed):
    """An inf in one micro-batch, or a scale too big for FP16: the window is skipped, the LR stays."""
    s, where = draw(st.tuples(seeds, st.sampled_from([2, 3])), n=1, seed=seed, key="08.skip")[0]
    cases = [case(s, windows=3, inf_at=[where]), overflowing_start(s + 1)]
    check_training(learner, cases, "a window whose gradients overflow is skipped: the parameters "
                                   "and the learning rate stay, the scale backs off")


@exercise(TRAIN, points=1)
def test_a_growing_scale_is_not_a_skipped_step(learner, seed):
    """growth_interval=1: every clean window grows the scale, and every one steps the scheduler."""
    s = draw(seeds, n=1, seed=seed, key="08.grow")[0]
    check_training(learner, [case(s, windows=3, init_scale=2.0**8, growth_interval=1)],
                   "when update() grows the scale the step was not skipped: the scheduler steps")

