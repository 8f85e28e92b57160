"""Lesson 08's claims, recomputed with the code the notebook runs, with tolerances.

The notebook prints only verdicts that hold on any CPU; these tests assert the
claims behind them, and those of the cells whose output nbval ignores (the
anomaly-mode timing). They import the same helpers (`grader.labs.tiny_lm`,
`grader.labs.dispatch_modes`) and run the notebook's own exercise solutions.
"""

from __future__ import annotations

import copy
import math
import warnings

import nbformat
import numpy as np
import pytest
import torch

from conftest import SOLUTIONS
from grader.labs import tiny_lm
from grader.labs.dispatch_modes import OpCounter, emulate_matmuls
from grader.notebook import EXERCISE_TAG, cell_exercise, has_tag

LESSON = "08_a_real_model_end_to_end"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the notebook runs
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus():
    return tiny_lm.build_corpus()


@pytest.fixture(scope="module")
def histories(corpus):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {recipe: tiny_lm.train(recipe, corpus, steps=120) for recipe in tiny_lm.RECIPES}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def batch(corpus):
    return tiny_lm.get_batch(corpus, 8, 64, torch.Generator().manual_seed(123))


def solution(name: str):
    """The notebook's own answer to an exercise, defined as the lesson defines it."""
    nb = nbformat.read(SOLUTIONS / f"{LESSON}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if has_tag(c, EXERCISE_TAG) and cell_exercise(c) == name)
    namespace = {"math": math, "torch": torch}
    exec(compile(cell.source, f"<{name}>", "exec"), namespace)
    return namespace[name]


def forward_loss(model, batch, dtype, native=False):
    with torch.no_grad(), emulate_matmuls(dtype, enabled=not native), \
            torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        return model(*batch).item()


def test_the_corpus_is_256_kib_of_standard_library_source(corpus):
    assert len(corpus) == tiny_lm.CORPUS_BYTES == 2**18
    text = bytes(corpus.to(torch.uint8).tolist()).decode("utf-8", errors="replace")
    assert "def " in text and "class " in text  # Python source, not something else
    assert int(corpus.min()) >= 0 and int(corpus.max()) < 256


def test_the_first_loss_is_close_to_ln_256(corpus):
    x, y = tiny_lm.get_batch(corpus, 8, 64, torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss = tiny_lm.make_model(0)(x, y).item()
    assert abs(loss - math.log(256)) < 0.05


def test_the_three_recipes_reach_the_same_loss_within_five_percent(histories):
    final = {r: float(np.mean(h.losses[-20:])) for r, h in histories.items()}
    for recipe, loss in final.items():
        assert loss < 3.0, (recipe, loss)
        assert abs(loss / final["FP32"] - 1) < 0.05, final
    assert not any(histories["FP32"].skipped) and not any(histories["BF16"].skipped)
    assert sum(histories["FP16 + GradScaler"].skipped) <= 0.05 * 120


def test_the_fp16_scale_grows_every_20_clean_steps_and_halves_on_overflow(histories):
    h = histories["FP16 + GradScaler"]
    assert h.scales[0] == 2.0**16
    clean_run = 0
    for before, after, skipped in zip(h.scales, h.scales[1:], h.skipped):
        clean_run = 0 if skipped else clean_run + 1
        if skipped:
            assert after == before / 2
        elif clean_run == 20:
            assert after == before * 2
            clean_run = 0
        else:
            assert after == before


def test_block_1_query_and_key_gradients_dip_below_fp16_subnormals_early(histories):
    h = histories["FP16 + GradScaler"]
    edges = tiny_lm.HIST_EDGES
    counts = np.array(h.grad_hists["blocks.1.attn.qkv.weight"], dtype=float)
    below = counts[:, : tiny_lm.FP16_MIN_SUBNORMAL_LOG2 - edges[0]].sum(axis=1) / counts.sum(axis=1)
    early = [b for s, b in zip(h.hist_steps, below) if s <= 16]
    assert max(early) > 1 / 5
    late = [b for s, b in zip(h.hist_steps, below) if s >= 40]
    assert max(late) < 0.05  # a transient, not the steady state


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_emulated_matmuls_agree_with_pytorch_kernels(batch, dtype):
    emulated = forward_loss(tiny_lm.make_model(0), batch, dtype)
    native = forward_loss(tiny_lm.make_model(0), batch, dtype, native=True)
    assert math.isclose(emulated, native, rel_tol=1e-3)
    a, b = torch.randn(256, 64).to(dtype), torch.randn(64, 192).to(dtype)
    with emulate_matmuls(dtype):
        product = a @ b
    reference = a @ b
    differ = product != reference
    assert product.dtype == dtype and float(differ.float().mean()) < 0.01
    if differ.any():  # by at most one step of the format
        relative = (product - reference).float().abs() / reference.float().abs().clamp_min(1e-3)
        assert float(relative[differ].max()) <= 2 * torch.finfo(dtype).eps


@pytest.mark.parametrize("recipe", ["FP16 + GradScaler", "BF16"])
def test_emulated_matmuls_train_like_pytorch_kernels(corpus, recipe):
    emulated = tiny_lm.train(recipe, corpus, steps=4, emulate=True)
    native = tiny_lm.train(recipe, corpus, steps=4, emulate=False)
    assert np.allclose(emulated.losses, native.losses, rtol=2e-3)
    assert emulated.scales == native.scales


def test_emulation_leaves_other_dtypes_and_ops_alone():
    a = torch.randn(8, 8)
    with emulate_matmuls(torch.float16):
        assert torch.equal(a @ a, torch.mm(a, a))  # FP32 untouched
    with pytest.raises(ValueError, match="float16 or torch.bfloat16"):
        emulate_matmuls(torch.float32)


@pytest.mark.parametrize("power, no_fix, prescaled, fp32_region", [
    (15, True, True, True), (17, False, True, True), (19, False, False, True)])
def test_grown_logits_break_fp16_where_the_lesson_says(histories, batch, power, no_fix, prescaled, fp32_region):
    model = copy.deepcopy(histories["FP32"].model)
    tiny_lm.grow_attention_logits(model, 1, batch, 2.0**power)
    assert math.isfinite(forward_loss(model, batch, None)) and math.isfinite(forward_loss(model, batch, torch.bfloat16))
    for prescale, in_fp32, finite in ((False, False, no_fix), (True, False, prescaled), (False, True, fp32_region)):
        for block in model.blocks:
            block.attn.prescale_queries, block.attn.scores_in_fp32 = prescale, in_fp32
        assert math.isfinite(forward_loss(model, batch, torch.float16)) == finite
    # Native FP16 kernels overflow in the same place as the emulation.
    for block in model.blocks:
        block.attn.prescale_queries = block.attn.scores_in_fp32 = False
    assert math.isfinite(forward_loss(model, batch, torch.float16, native=True)) == no_fix


def test_the_first_inf_is_born_in_block_1_attention(histories, batch):
    model = copy.deepcopy(histories["FP32"].model)
    tiny_lm.grow_attention_logits(model, 1, batch, 2.0**17)
    first_nonfinite = solution("first_nonfinite")
    with emulate_matmuls(torch.float16), torch.autocast("cpu", dtype=torch.float16):
        assert first_nonfinite(model, batch) == "blocks.1.attn"
    with torch.autocast("cpu", dtype=torch.float16):  # PyTorch's own FP16 kernels agree
        assert first_nonfinite(model, batch) == "blocks.1.attn"


def test_anomaly_mode_makes_a_training_step_clearly_slower(batch):
    plain, anomaly = tiny_lm.anomaly_cost(tiny_lm.make_model(0), batch)
    assert anomaly > 1.5 * plain, (plain, anomaly)


def test_detect_anomaly_names_the_backward_of_the_safe_square_root():
    v = torch.tensor([4.0, 0.0, -1.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="SqrtBackward0"), torch.autograd.detect_anomaly():
            torch.where(v > 0, v.sqrt(), 0.0).sum().backward()


def test_only_a_fused_optimizer_steps_without_a_host_sync(batch):
    results = {}
    for label, kwargs in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}),
                          ("fused", {"fused": True})):
        model = tiny_lm.make_model(0)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, **kwargs)
        scaler = torch.amp.GradScaler("cpu")
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(*batch)
            scaler.scale(loss).backward()
            with OpCounter() as counter:
                scaler.step(opt)
            scaler.update()
        results[label] = (counter.total, counter.host_syncs, getattr(opt, "_step_supports_amp_scaling", False))
    assert [s for _, s, _ in results.values()] == [1, 1, 0]
    assert [a for _, _, a in results.values()] == [False, False, True]
    assert results["for-loop"][0] > results["foreach"][0] > results["fused"][0]


def test_accumulating_four_micro_batches_matches_one_big_batch(corpus):
    train_accumulated = solution("train_accumulated")
    x, y = tiny_lm.get_batch(corpus, 8, 64, torch.Generator().manual_seed(7))

    def moved(micro, steps):
        model = tiny_lm.make_model(0)
        start = torch.cat([p.reshape(-1) for p in model.parameters()]).detach()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        train_accumulated(model, opt, sched, torch.amp.GradScaler("cpu"), micro, steps, torch.bfloat16)
        return torch.cat([p.reshape(-1) for p in model.parameters()]).detach() - start

    small = moved([(x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)], 4)
    big = moved([(x, y)], 1)
    assert float((small - big).norm() / big.norm()) < 0.01
