"""Nothing outlives grade-class: not after `kill -9`, not after Ctrl-C; and a rerun
sees only what is submitted now."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import ROOT, SOLUTIONS
from grading_fixtures import FIXTURES, path_for

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and a subreaper")
LOOPING = path_for(next(f for f in FIXTURES if f.name == "infinite-loop"))


@pytest.fixture(scope="module")
def busy_class(tmp_path_factory):
    """One quick submission, then loopers that keep both grading processes busy."""
    subs = tmp_path_factory.mktemp("busy")
    shutil.copy(SOLUTIONS / "03_loss_scaling.ipynb", subs / "a_correct.ipynb")
    for i in range(12):  # at least 30 s of work on 2 jobs, however loaded the machine
        shutil.copy(LOOPING, subs / f"loop{i:02d}.ipynb")
    return subs


def _probe(subs: Path, out: Path, stop: str) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "lifecycle_probe.py"), str(subs), str(out),
                           "--stop", stop, "--settle", "10", "--", "--jobs", "2", "--timeout", "5"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert "error" not in result, result
    return result


@pytest.mark.slow
@linux_only
def test_after_kill_9_of_grade_class_nothing_runs_on_and_no_report_is_written(busy_class, tmp_path):
    result = _probe(busy_class, tmp_path / "out", "kill")
    assert result["left_running"] == [], result
    assert result["reports_after_stop"] == [] and result["reports_lost"] == []


@pytest.mark.slow
@linux_only
def test_ctrl_c_stops_grade_class_at_once_and_keeps_every_report(busy_class, tmp_path):
    """The target, 2 s, is measured on an idle machine by `benchmarks/hostile_costs.py`.
    Here the suite loads every core, so the test asks only that grading stops long
    before the loopers left (at least 20 s of work) would have finished."""
    out = tmp_path / "out"
    result = _probe(busy_class, out, "int")
    assert result["sigint_at_stop"] == "caught", result
    assert result["exit_code"] == 130 and "interrupted" in result["stderr"], result
    assert "Traceback" not in result["stderr"] and "KeyboardInterrupt" not in result["stderr"]
    assert result["exit_latency_s"] < 8.0, result
    assert result["left_running"] == [] and result["reports_lost"] == [], result
    assert result["reports_at_stop"] >= 1
    for path in (out / "reports").glob("*/*.json"):
        assert json.loads(path.read_text())["lesson"] == "03_loss_scaling"


def test_out_exists_before_the_paths_hidden_from_learners_are_worked_out(tmp_path, monkeypatch):
    """On a first run `--out` did not exist yet, so workers could list out/reports."""
    from grader import batch
    from grader.config import GraderConfig

    subs, out = tmp_path / "subs", tmp_path / "new" / "out"
    subs.mkdir()
    shutil.copy(SOLUTIONS / "03_loss_scaling.ipynb", subs / "ada.ipynb")
    seen = []
    monkeypatch.setattr(batch, "_run_pool", lambda todo, out, config, *rest: seen.append((config, out.is_dir())))
    result = batch.grade_class(subs, out, replace(GraderConfig(), isolate=False), jobs=1)
    (config, existed), = seen
    assert existed and str(out.resolve()) in config.hidden_paths
    assert result.reports[result.items[0]]["status"] == "ungradable"  # no report: still a row
