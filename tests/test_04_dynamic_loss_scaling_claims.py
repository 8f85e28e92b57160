"""Claims of lesson 04_dynamic_loss_scaling (the dynamic loss scale's sawtooth),
with tolerances, and margins for the printed roundings (tests/lesson_code.py)."""

import pytest

from lesson_code import lesson_namespace

pytestmark = pytest.mark.slow


def test_the_sawtooth_has_the_shape_the_lesson_describes():
    ns = lesson_namespace("04_dynamic_loss_scaling", "overflow_steps = [step")
    steps, scales, losses = ns["overflow_steps"], ns["scales_used"], ns["losses_seen"]
    assert steps[:3] == [1, 2, 3] and scales[3] == 2.0**17
    assert min(scales[20:]) == 2.0**16 and max(scales[500:]) in (2.0**18, 2.0**19)
    assert 0.012 <= len(steps) / len(scales) <= 0.028                   # "about 2%", printed as 1-3%
    assert sum(losses[:50]) > 15 * sum(losses[-50:])
