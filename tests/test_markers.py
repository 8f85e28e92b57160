"""Solution regions become stubs; malformed markers are refused with the cell named."""

import pytest

from grader.markers import MarkerError, strip_solutions

STUB = "raise NotImplementedError('Exercise 3.1: scale_gradients')"


def test_region_becomes_a_stub_indented_like_its_marker():
    source = ("def f(x):\n    \"\"\"Doc.\"\"\"\n    ### BEGIN SOLUTION\n    y = x * 2\n"
              "    return y\n    ### END SOLUTION\n")
    assert strip_solutions(source, STUB, "cell 4") == f'def f(x):\n    """Doc."""\n    {STUB}'


def test_two_regions_in_one_cell_both_become_stubs():
    source = "### BEGIN SOLUTION\na = 1\n### END SOLUTION\nb = 2\n### BEGIN SOLUTION\nc = 3\n### END SOLUTION"
    assert strip_solutions(source, "STUB", "c") == "STUB\nb = 2\nSTUB"


@pytest.mark.parametrize("source, problem", [
    ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n### END SOLUTION", "nested"),
    ("x = 1\n### END SOLUTION\n", "without"),
    ("### BEGIN SOLUTIONS\nx = 1\n### END SOLUTION", "looks like a solution marker"),
])
def test_malformed_markers_are_refused_with_the_place_named(source, problem):
    with pytest.raises(MarkerError, match=problem) as info:
        strip_solutions(source, STUB, "solutions/x.ipynb, cell 7")
    assert "cell 7" in str(info.value)
