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


def test_a_passing_tolerance_row_prints_the_tolerance_not_machine_dependent_digits(capsys):
    """Last digits of matmuls differ between CPUs; a stored self-check table must not."""
    for noisy in (0.30690512, 0.30690514):
        with SelfCheck("tolerance") as sc:
            sc.close("loss", 0.306905, noisy, rel=1e-6)
            sc.within("max |error|", noisy * 1e-9, 1e-6)
    first, second = capsys.readouterr().out.split("Self-check: tolerance")[1:]
    assert first == second and "0.3069" not in first and "PASS" in first


def test_a_failing_tolerance_row_shows_both_numbers_and_the_cause(capsys):
    with SelfCheck("tolerance") as sc:
        sc.close("loss", 0.25, 0.5, rel=1e-6, cause="return the unscaled loss")
        sc.within("max |error|", 3e-3, 1e-6, cause="unscale before stepping")
    out = capsys.readouterr().out
    assert "0.25" in out and "0.5" in out and "0.003" in out and out.count("FAIL") == 2
    assert "return the unscaled loss" in out and "unscale before stepping" in out
