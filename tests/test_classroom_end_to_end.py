"""A class of nine, two assignments, every instructor tool: one total per learner everywhere.

The class: several files per learner for one lesson (the latest counts in hw1,
the best in hw2), a file inside the grace period, a late file, a file past the
last accepted day, an extension, a Moodle-style folder name matched by prefix,
a file whose time comes from its mtime, a roster with a name it does not match
and a member who handed in nothing, an exercise override and a total override,
and a learner whose code and roster name try to inject HTML and a spreadsheet
formula. Each assignment is graded once (module fixture); every assertion reads
what that run left behind.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import nbformat
import pytest

from conftest import NOTEBOOKS, ROOT, SOLUTIONS, run_grader
from grader.gradescope import build_autograder_zip, validate_results
from grader.lms import CANVAS_STUDENT_COLUMNS, MOODLE_USER_COLUMNS

pytestmark = pytest.mark.slow
BERLIN = ZoneInfo("Europe/Berlin")
WRONG_SIGN = ROOT / "tests" / "fixtures" / "grading" / "wrong-sign.ipynb"
RAISES = ROOT / "tests" / "fixtures" / "grading" / "raises.ipynb"
INJECTION = "# <script>alert('owned')</script> =HYPERLINK(\"http://x\")"

ASSIGNMENTS = """
[defaults]
timezone = "Europe/Berlin"
late = { penalty_per_day = 0.25, grace_minutes = 30, max_days = 2 }
visibility = "after_due_date"

[assignments.hw1]
title = "Homework 1: loss scaling"
due = 2026-03-06T23:59:00
# lesson 03's three warm-ups at their own points: 10 in all
exercises = { "03_loss_scaling/scale_gradients" = 4, "03_loss_scaling/unscale_gradients" = 3, "03_loss_scaling/has_overflow" = 3 }
canvas_assignment_id = "4711"
extensions = { "emmy@example.edu" = 2026-03-10T23:59:00 }

[assignments.hw2]
title = "Homework 2: a dynamic loss scaler"
due = 2026-03-13T23:59:00
exercises = { "04_dynamic_loss_scaling/DynamicLossScaler" = 20, "03_loss_scaling/has_overflow" = 2 }
select = "best"
visibility = "after_published"
"""

ROSTER = """submission,student_id,name,email,section,sis_login_id,canvas_user_id
ada,s-ada,Ada Lovelace,ada@example.edu,A,ada.l,101
sofia,s-sofia,Sofia Kovalevskaya,sofia@example.edu,A,sofia.k,102
bob,s-bob,Bob Moses,bob@example.edu,B,bob.m,103
cy,s-cy,Cy Young,cy@example.edu,B,cy.y,104
Emmy Noether,s-noether,Emmy Noether,emmy@example.edu,B,emmy.n,105
dan,s-dan,Dan Shechtman,dan@example.edu,A,dan.s,106
fay,s-fay,Fay Ajzenberg,fay@example.edu,A,fay.a,107
ivy,s-ivy,=Ivy,ivy@example.edu,A,ivy.x,108
"""

OVERRIDES = """learner,exercise,points,reason,assignment
s-cy,has_overflow,1,partial credit after reading the code,hw1
bob@example.edu,total,+2,bonus: found a typo in the lesson,hw1
"""

EMMY = "Emmy Noether_105_assignsubmission_file_"  # how Moodle names a learner's folder


def _with_injected_comment(path: Path) -> None:
    nb = nbformat.read(SOLUTIONS / "03_loss_scaling.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("course", {}).get("exercise") == "scale_gradients"
                and "exercise" in c.metadata.get("tags", []))
    cell.source = INJECTION + "\n" + cell.source
    nbformat.write(nb, path)


def _class(root: Path) -> tuple[Path, Path, Path]:
    """hw1/ and hw2/ submission folders, and the submitted_at CSV for each."""
    hw1, hw2 = root / "hw1", root / "hw2"
    files1 = {
        "ada/03_loss_scaling.ipynb": (WRONG_SIGN, "2026-03-05T10:00:00"),
        "ada/03_loss_scaling (1).ipynb": (SOLUTIONS / "03_loss_scaling.ipynb", "2026-03-06T20:00:00"),
        "sofia/03_loss_scaling.ipynb": (SOLUTIONS / "03_loss_scaling.ipynb", "2026-03-04T10:00:00"),
        "sofia/03_loss_scaling (1).ipynb": (WRONG_SIGN, "2026-03-06T21:00:00"),
        "bob.ipynb": (SOLUTIONS / "03_loss_scaling.ipynb", "2026-03-07T00:10:00"),  # in the grace period
        "cy.ipynb": (SOLUTIONS / "03_loss_scaling.ipynb", "2026-03-08T10:00:00"),  # 2 days late
        f"{EMMY}/03_loss_scaling.ipynb": (SOLUTIONS / "03_loss_scaling.ipynb", "2026-03-09T10:00:00"),
        "dan.ipynb": (SOLUTIONS / "03_loss_scaling.ipynb", "2026-03-12T10:00:00"),  # past max_days
        "zed.ipynb": (RAISES, None),  # not on the roster; its time is its mtime
    }
    files2 = {
        "ada/04_dynamic_loss_scaling.ipynb": (SOLUTIONS / "04_dynamic_loss_scaling.ipynb", "2026-03-12T10:00:00"),
        "ada/04_dynamic_loss_scaling (1).ipynb": (NOTEBOOKS / "04_dynamic_loss_scaling.ipynb",
                                                  "2026-03-13T10:00:00"),
        "ada/03_loss_scaling.ipynb": (SOLUTIONS / "03_loss_scaling.ipynb", "2026-03-12T10:00:00"),
        "sofia/04_dynamic_loss_scaling.ipynb": (SOLUTIONS / "04_dynamic_loss_scaling.ipynb",
                                                "2026-03-14T12:00:00"),  # 1 day late
    }
    times = []
    for folder, files in ((hw1, files1), (hw2, files2)):
        lines = ["file,submitted_at"]
        for name, (source, when) in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, folder / name)
            if when:
                lines.append(f'"{name}",{when}')
        path = root / f"{folder.name}_submitted_at.csv"
        path.write_text("\n".join(lines) + "\n")
        times.append(path)
    _with_injected_comment(hw1 / "ivy.ipynb")
    stamp = datetime(2026, 3, 6, 12, 0, tzinfo=BERLIN).timestamp()
    os.utime(hw1 / "zed.ipynb", (stamp, stamp))
    os.utime(hw1 / "ivy.ipynb", (stamp, stamp))
    return hw1, times[0], times[1]


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    root = tmp_path_factory.mktemp("classroom")
    hw1, times1, times2 = _class(root)
    (root / "assignments.toml").write_text(ASSIGNMENTS)
    (root / "roster.csv").write_text(ROSTER)
    (root / "overrides.csv").write_text(OVERRIDES)
    outs = {}
    for assignment, times in (("hw1", times1), ("hw2", times2)):
        out = root / "graded" / assignment
        proc = run_grader("grade-class", str(root / assignment), "--out", str(out), "--assignment", assignment,
                          "--assignments", str(root / "assignments.toml"), "--roster", str(root / "roster.csv"),
                          "--overrides", str(root / "overrides.csv"), "--submitted-at", str(times),
                          "--timeout", "5")
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[assignment] = (out, proc.stdout)
    for assignment, (out, _) in outs.items():
        proc = run_grader("feedback", str(out), "--to", str(root / "feedback" / assignment))
        assert proc.returncode == 0, proc.stderr[-2000:]
    return root, outs


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _gradebook(out: Path) -> dict[str, dict]:
    return {row["learner"]: row for row in _csv(out / "gradebook.csv")}


EXPECTED = {
    "hw1": {"ada": 10, "sofia": 7, "bob": 12, "cy": 4, "Emmy Noether": 10, "dan": 0, "fay": 0, "ivy": 10,
            "zed": 6},
    "hw2": {"ada": 22, "sofia": 15, "bob": 0, "cy": 0, "Emmy Noether": 0, "dan": 0, "fay": 0, "ivy": 0},
}


def test_each_assignment_counts_its_own_exercises_at_its_own_points(classroom):
    _, outs = classroom
    for assignment, max_total in (("hw1", "10"), ("hw2", "22")):
        rows = _gradebook(outs[assignment][0])
        assert {row["max_total"] for row in rows.values()} == {max_total}, assignment
        assert {k: float(r["total"]) for k, r in rows.items()} == EXPECTED[assignment], assignment
    hw2 = _gradebook(outs["hw2"][0])
    assert [c for c in hw2["ada"] if "/" in c] == ["03_loss_scaling/has_overflow",
                                                   "04_dynamic_loss_scaling/DynamicLossScaler"]
    assert hw2["ada"]["04_dynamic_loss_scaling/DynamicLossScaler"] == "20"  # 10/10 there, worth 20 here


def test_the_selection_rule_picks_one_file_and_says_which_and_why(classroom):
    _, outs = classroom
    hw1, hw2 = _gradebook(outs["hw1"][0]), _gradebook(outs["hw2"][0])
    assert "counted ada/03_loss_scaling (1).ipynb" in hw1["ada"]["notes"] and "the latest" in hw1["ada"]["notes"]
    # latest, even when an earlier file scored better
    assert "counted sofia/03_loss_scaling (1).ipynb" in hw1["sofia"]["notes"]
    assert hw1["sofia"]["03_loss_scaling/scale_gradients"] == "1"
    assert "counted ada/04_dynamic_loss_scaling.ipynb" in hw2["ada"]["notes"]
    assert "rule 'best': the best score" in hw2["ada"]["notes"]


def test_lateness_grace_extensions_and_mtime_fallback(classroom):
    _, outs = classroom
    rows = _gradebook(outs["hw1"][0])
    assert rows["bob"]["late_penalty"] == "0" and "late" not in rows["bob"]["notes"]
    assert rows["cy"]["late_penalty"] == "4" and "2 days late: 50% off" in rows["cy"]["notes"]
    assert rows["dan"]["late_penalty"] == "10" and "more than the 2 accepted" in rows["dan"]["notes"]
    assert rows["Emmy Noether"]["late_penalty"] == "0"  # 3 days after the due time, inside her extension
    zed = json.loads((outs["hw1"][0] / "grades" / "zed.json").read_text())
    assert zed["lessons"]["03_loss_scaling"]["time_source"] == "file modification time"
    hw2 = _gradebook(outs["hw2"][0])
    assert hw2["sofia"]["late_penalty"] == "5" and "1 day late: 25% off" in hw2["sofia"]["notes"]


def test_the_roster_maps_names_and_lists_who_is_missing_or_unknown(classroom):
    _, outs = classroom
    out, stdout = outs["hw1"]
    rows = _gradebook(out)
    assert rows["Emmy Noether"]["student_id"] == "s-noether"  # matched by the Moodle folder's prefix
    assert rows["zed"]["status"] == "not-on-roster" and rows["zed"]["student_id"] == ""
    assert rows["fay"]["status"] == "no-submission" and rows["fay"]["total"] == "0"
    assert "match no one on the roster" in stdout and "zed" in stdout
    assert "handed in nothing" in stdout and "fay" in stdout


def test_overrides_are_applied_with_an_audit_trail(classroom):
    _, outs = classroom
    out = outs["hw1"][0]
    cy = json.loads((out / "grades" / "cy.json").read_text())
    [audit] = cy["overrides"]
    assert (audit["target"], audit["before"], audit["after"]) == ("03_loss_scaling/has_overflow", 3.0, 1.0)
    assert audit["reason"] == "partial credit after reading the code" and "overrides.csv, line 2" in audit["where"]
    assert cy["lessons"]["03_loss_scaling"]["earned"] == 8.0 and cy["total"] == 4.0  # overridden, then late
    bob = _gradebook(out)["bob"]
    assert bob["adjustment"] == "2" and "bonus: found a typo" in bob["notes"]
    assert "bonus: found a typo" in (out / "review" / "bob.md").read_text()


def _review_total(page: str) -> float:
    return float(re.search(r": (\S+) / (\S+)\*\*", page).group(1))


def test_one_total_in_every_output(classroom):
    root, outs = classroom
    for assignment, (out, _) in outs.items():
        canvas = _csv(out / "lms" / "canvas.csv")
        moodle = {row["ID number"]: row for row in _csv(out / "lms" / "moodle.csv")}
        long = [row for row in _csv(out / "lms" / "grades_long.csv") if row["exercise"] == "total"]
        title = [c for c in canvas[0] if c not in CANVAS_STUDENT_COLUMNS][0]
        canvas_by_id = {row["SIS User ID"]: row[title] for row in canvas[1:]}
        moodle_title = [c for c in next(iter(moodle.values())) if c not in MOODLE_USER_COLUMNS][0]
        for key, row in _gradebook(out).items():
            total = float(row["total"])
            grades = json.loads((out / "grades" / f"{key}.json").read_text())
            results = json.loads((out / "gradescope" / key / "results.json").read_text())
            review = (out / "review" / f"{key}.md").read_text()
            feedback = (root / "feedback" / assignment / f"{key.replace(' ', '_')}.html").read_text()
            seen = {"grades": grades["total"], "gradescope": results["score"],
                    "gradescope tests": round(sum(t["score"] for t in results["tests"]), 2),
                    "review": _review_total(review),
                    "feedback": float(re.search(r"Total: (\S+) /", feedback).group(1)),
                    "long": float(next(r["points"] for r in long if r["learner"] == key))}
            if row["student_id"]:
                seen["canvas"] = float(canvas_by_id[row["student_id"]])
                seen["moodle"] = float(moodle[row["student_id"]][moodle_title])
            assert set(seen.values()) == {total}, (assignment, key, seen)
            assert validate_results(results) == []
            exercises = sum(float(v) for c, v in row.items() if "/" in c and v)
            assert round(exercises - float(row["late_penalty"]) + float(row["adjustment"]), 2) == total


def test_the_gradescope_run_path_uses_the_same_rule_and_policy(classroom, tmp_path):
    root, outs = classroom
    source = tmp_path / "autograder" / "source"
    zip_path = build_autograder_zip(tmp_path / "hw.zip", ROOT, "hw2", root / "assignments.toml")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(source)
        assert "--assignment hw2" in zf.read("run_autograder").decode()

    def gradescope_run(assignment: str, files: dict[str, Path], created: str, email: str) -> dict:
        box = tmp_path / f"{assignment}-{email}"
        shutil.copytree(source, box / "source")
        for name, path in files.items():
            (box / "submission" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, box / "submission" / name)
        (box / "submission_metadata.json").write_text(json.dumps(
            {"created_at": created, "users": [{"email": email, "name": "x", "id": 1}]}))
        proc = subprocess.run([sys.executable, "-m", "grader.gradescope", "run", str(box), "--assignment",
                               assignment], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return json.loads((box / "results" / "results.json").read_text())

    ada = gradescope_run("hw2", {name: root / "hw2" / "ada" / name for name in
                                 ("04_dynamic_loss_scaling.ipynb", "04_dynamic_loss_scaling (1).ipynb",
                                  "03_loss_scaling.ipynb")}, "2026-03-12T10:00:00+01:00", "ada@example.edu")
    assert ada["score"] == float(_gradebook(outs["hw2"][0])["ada"]["total"]) == 22
    assert ada["visibility"] == "after_published" and {t["visibility"] for t in ada["tests"]} == {"after_published"}
    assert not any("DynamicLossScaler" in t["name"] and t["score"] == 0 for t in ada["tests"])  # one 04 file
    # Emmy's extension reaches Gradescope through her email: 3 days late, yet no penalty.
    with_extension = gradescope_run("hw1", {"03_loss_scaling.ipynb": SOLUTIONS / "03_loss_scaling.ipynb"},
                                    "2026-03-09T10:00:00+01:00", "emmy@example.edu")
    without = gradescope_run("hw1", {"03_loss_scaling.ipynb": SOLUTIONS / "03_loss_scaling.ipynb"},
                             "2026-03-09T10:00:00+01:00", "someone@example.edu")
    assert with_extension["score"] == float(_gradebook(outs["hw1"][0])["Emmy Noether"]["total"]) == 10
    assert without["score"] == 0 and any("late penalty" in t["name"] for t in without["tests"])


def test_canvas_and_moodle_files_follow_their_import_layouts(classroom):
    _, outs = classroom
    out = outs["hw1"][0]
    with open(out / "lms" / "canvas.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [*CANVAS_STUDENT_COLUMNS, "Homework 1: loss scaling (4711)"]
    assert rows[1][0] == "Points Possible" and rows[1][-1] == "10"
    ada = next(r for r in rows if r[2] == "s-ada")
    assert ada == ["Ada Lovelace", "101", "s-ada", "ada.l", "A", "10"]
    assert not any(r[2] == "" for r in rows[2:])  # the unmatched file has no Canvas row
    with open(out / "lms" / "moodle.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [*MOODLE_USER_COLUMNS, "Homework 1: loss scaling"]
    assert ["Emmy", "Noether", "s-noether", "emmy@example.edu", "10"] in rows
    assert ["'=Ivy", "", "s-ivy", "ivy@example.edu", "10"] in rows  # a formula never reaches a spreadsheet
    assert len(rows) == 1 + len(ROSTER.strip().splitlines()) - 1


def test_feedback_pages_hold_one_learners_own_work_escaped(classroom):
    root, _ = classroom
    pages = root / "feedback" / "hw1"
    ivy = (pages / "ivy.html").read_text()
    assert "<script" not in ivy and "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in ivy
    assert "def scale_gradients" in ivy and "Total: 10 / 10" in ivy
    sofia = (pages / "sofia.html").read_text()
    assert "owned" not in sofia and "Likely cause: the sign is flipped" in sofia
    checks = (ROOT / "grader" / "checks" / "test_03_loss_scaling.py").read_text()
    hidden = [line.strip() for line in checks.splitlines() if len(line.strip()) > 40]
    assert not any(line in page for line in hidden for page in (ivy, sofia))
    assert "<link" not in ivy and "src=" not in ivy  # self-contained
    cy = (pages / "cy.html").read_text()
    assert "partial credit after reading the code" in cy and "Late penalty: -4 points" in cy


def test_stats_show_histograms_failing_checks_and_crashes(classroom):
    _, outs = classroom
    stats = outs["hw1"][0] / "stats"
    page = (stats / "index.html").read_text()
    for png in ("assignment_hw1.png", "exercise_03_loss_scaling_scale_gradients.png"):
        assert (stats / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"src='{png}'" in page
    assert "the sign is flipped: keep each gradient&#x27;s sign (1)" in page  # sofia's counted file
    assert "your code raised ValueError" in page  # zed's
    totals = [float(r["total"]) for r in _gradebook(outs["hw1"][0]).values() if r["status"] != "no-submission"]
    assert f"Median total {statistics.median(totals):g} of 10" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_stats_page_shows_its_figures_in_headless_chromium(classroom, tmp_path):
    """Screenshots of the page with and without its PNGs: the figures' bars (matplotlib's
    default blue) appear only when the images load."""
    from matplotlib.image import imread

    stats = classroom[1]["hw1"][0] / "stats"
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(stats / "index.html", bare / "index.html")

    def blue_pixels(page: Path) -> int:
        shot = tmp_path / f"{page.parent.name}.png"
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={tmp_path / ('profile-' + page.parent.name)}", "--window-size=1200,1600",
                        f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
        rgb = (imread(shot)[..., :3] * 255).round()
        return int(((abs(rgb[..., 0] - 31) < 12) & (abs(rgb[..., 1] - 119) < 12) & (abs(rgb[..., 2] - 180) < 12)).sum())

    assert blue_pixels(stats / "index.html") > 5000
    assert blue_pixels(bare / "index.html") < 50
