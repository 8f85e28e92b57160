"""Lesson 07's claims, asserted with tolerances where the notebook prints a verdict or a rounded figure.

Matmuls, reductions and training runs differ in their last bits between CPUs, so
the notebook prints byte counts (exact everywhere), elementwise results (exact
everywhere) and verdicts; the figures behind those verdicts are asserted here.
Each test runs the notebook's own cells (found by a line they contain) in one
namespace with the lesson's solutions, so the claim is checked on the code path
the learner reads.
"""

from __future__ import annotations

import contextlib
import io
import math

import nbformat
import numpy as np
import pytest
import torch

from conftest import SOLUTIONS
from grader.labs.memory import Recipe, measure_model_states
from grader.notebook import EXERCISE_TAG, SUPPORT_TAG, has_tag

LESSON = SOLUTIONS / "07_where_the_bytes_go.ipynb"


class Lesson:
    """The solution notebook's namespace: setup, support and exercise cells run once, demos on demand."""

    def __init__(self):
        self.cells = [c for c in nbformat.read(LESSON, as_version=4).cells if c.cell_type == "code"]
        self.ns: dict = {}
        self.ran: set[int] = set()
        self._exec(self.cells[0].source)  # the setup cell
        for i, cell in enumerate(self.cells):
            if has_tag(cell, SUPPORT_TAG) or has_tag(cell, EXERCISE_TAG):
                self._exec(cell.source)
                self.ran.add(i)
        self.ran.add(0)

    def _exec(self, source: str) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(source, str(LESSON), "exec"), self.ns)
        return out.getvalue()

    def run(self, line: str) -> str:
        """Run the first code cell containing `line`, after every earlier cell not run
        yet (as a learner would: the tests of this module may be dealt to different
        processes, so none can count on another having run a cell); return what it printed."""
        matches = [i for i, c in enumerate(self.cells) if line in c.source]
        assert matches, f"no code cell in {LESSON.name} contains {line!r}"
        target = matches[0]
        for i in range(target):
            if i not in self.ran:
                self._exec(self.cells[i].source)
                self.ran.add(i)
        self.ran.add(target)
        return self._exec(self.cells[target].source)


@pytest.fixture(scope="module")
def lesson():
    previous = torch.get_num_threads()
    yield Lesson()
    torch.set_num_threads(previous)


def test_every_measured_recipe_keeps_exactly_the_derived_bytes(lesson):
    lesson.run("measured = {name: measure_model_states(")
    measured, recipes, derive = lesson.ns["measured"], lesson.ns["RECIPES"], lesson.ns["bytes_per_param"]
    assert measured["FP32 + Adam"].per_param == measured["BF16 + FP32 master + Adam"].per_param == 16
    assert measured["AMP (autocast BF16) + Adam"].per_param == 16
    for name, m in measured.items():
        assert m.per_param == derive(recipes[name].as_dict()), name


def test_fused_adam_adds_next_to_nothing_and_foreach_the_most(lesson):
    lesson.run("def mlp(")
    peaks = {}
    for label, options in (("single", {"foreach": False}), ("foreach", {"foreach": True}),
                           ("fused", {"fused": True})):
        m = measure_model_states(lesson.ns["mlp"](), Recipe("fp32"), lesson.ns["BATCH"], **options)
        peaks[label] = m.peak / m.params
    assert peaks["fused"] < 16.5 < peaks["single"] < 18 < 19.5 < peaks["foreach"]


def test_saved_activations_are_linear_in_batch_and_quadratic_in_length_unless_fused(lesson):
    lesson.run("by_batch = {name:")
    by_batch, by_length = lesson.ns["by_batch"], lesson.ns["by_length"]
    for row in by_batch.values():
        assert all(math.isclose(b / a, 2.0, rel_tol=0.02) for a, b in zip(row, row[1:]))
    fused, written = by_length["fused (SDPA)"], by_length["written out"]
    assert all(math.isclose(b / a, 2.0, rel_tol=1e-9) for a, b in zip(fused, fused[1:]))
    assert 35 < written[-1] / written[0] < 50  # "about 40 times" from T = 32 to 512
    assert written[-1] / written[-2] > 2.8      # the T^2 term dominates at long sequences


def test_checkpointing_cuts_the_peak_by_more_than_half_for_one_more_forward(lesson):
    lesson.run("def forward_backward_timeline(")
    plain, ckpt = lesson.ns["plain_run"], lesson.ns["ckpt_run"]
    assert ckpt.peak < 0.5 * plain.peak
    extra = ckpt.ops - plain.ops
    assert 0.8 * lesson.ns["plain_fwd"] < extra < 2 * lesson.ns["plain_fwd"]


def test_bf16_second_moment_stalls_at_one_while_fp32_reaches_the_exact_value(lesson):
    lesson.run("def exp_avg_sq_after(")
    f = lesson.ns["exp_avg_sq_after"]
    exact = 2 * (1 - 0.999**3000)
    assert math.isclose(f(torch.float32), exact, rel_tol=1e-3)
    assert f(torch.bfloat16) == 1.0


def test_fp16_adam_divides_by_zero_below_a_few_thousandths(lesson):
    text = lesson.run('print(f"eps = 1e-8 stored in FP16:')
    rows = {line.split()[0]: line.split()[-1] for line in text.splitlines()[2:]}
    assert rows["0.1"] != "-inf" and rows["0.01"] != "-inf"
    assert rows["0.003"] == rows["0.001"] == rows["0.0001"] == "-inf"


def test_stochastic_rounding_follows_the_sum_where_rounding_to_nearest_stalls(lesson):
    lesson.run("def accumulate(")
    nearest, stochastic = lesson.ns["nearest"], lesson.ns["stochastic"]
    assert float(nearest[-1, 0]) == 1.0
    assert abs(float(stochastic[-1].mean()) - 1.2) < 0.03


def test_kahan_and_stochastic_rounding_track_the_master_where_nearest_stalls(lesson):
    lesson.run("def lr_at(")
    runs = lesson.ns["runs"]
    reference = np.mean(runs["FP32 master"][0][-50:])
    ratio = {m: np.mean(losses[-50:]) / reference for m, (losses, _) in runs.items()}
    assert ratio["round to nearest"] > 10 and ratio["torch AdamW on BF16"] > 10
    assert 0.9 < ratio["kahan"] < 1.1            # "follows the FP32 master almost exactly"
    assert ratio["stochastic rounding"] < 1.5    # "lands close to it"
    master = runs["FP32 master"][1].float()
    assert (runs["kahan"][1].float() - master).abs().max() < (runs["round to nearest"][1].float() - master).abs().max()
