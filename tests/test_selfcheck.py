"""Self-check tables: readable verdicts, likely causes, never a traceback.

Checkers print their table and return None, so a notebook cell shows the table
alone (a returned bool would add an `Out[...]` line that nbval, which runs cells
without history, cannot suppress with a trailing `;`)."""

from grader.selfcheck.core import SelfCheck
from grader.selfcheck.loss_scaling import check_has_overflow, check_scale_gradients


def stub(grads, scale):
    raise NotImplementedError("Exercise 3.1: scale_gradients")


def test_a_stub_is_reported_as_not_implemented_yet(capsys):
    check_scale_gradients(stub)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Traceback" not in out


def test_a_wrong_answer_shows_expected_got_and_a_likely_cause(capsys):
    check_scale_gradients(lambda grads, scale: [g / scale for g in grads])
    out = capsys.readouterr().out
    assert "FAIL" in out and "Likely cause" in out and "[8.0, -20.0, 0.0]" in out


def test_a_crash_becomes_a_row_naming_the_learners_line(capsys):
    def crashes(grads):
        return grads[10]

    check_has_overflow(crashes)
    out = capsys.readouterr().out
    assert "IndexError" in out and "Traceback" not in out


def test_a_correct_answer_passes_every_row(capsys):
    assert check_scale_gradients(lambda grads, scale: [float(g) * scale for g in grads]) is None
    assert "Result: all passed" in capsys.readouterr().out


def test_types_matter_in_comparisons():
    with SelfCheck("x") as sc:
        sc.compare("ints are not floats", [1.0], [1])
    assert not sc.passed


def test_an_error_inspecting_the_result_is_a_row_not_a_traceback(capsys):
    with SelfCheck("x") as sc:
        len(5)
    assert not sc.passed and "could not inspect the result" in capsys.readouterr().out
