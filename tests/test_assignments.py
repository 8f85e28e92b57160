"""Assignments, the selection rule, rosters, overrides and submission times, on made-up
reports: fast, no grading. tests/test_classroom_end_to_end.py runs them on a real class."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from grader.assignments import (AssignmentError, LatePolicy, load_assignment, load_assignments,
                                native_points, whole_course)
from grader.gradebook import gradebook_csv
from grader.gradescope import learner_results, validate_results
from grader.lms import CANVAS_STUDENT_COLUMNS, MOODLE_USER_COLUMNS, canvas_csv, long_csv, moodle_csv
from grader.overrides import OverrideError, load_overrides
from grader.roster import RosterError, load_roster
from grader.selection import Candidate, choose
from grader.standing import ClassSetup, Submitted, standings
from grader.submission_times import SubmittedAt, TimesError, load_times, submitted_at

NATIVE = {"03_loss_scaling": {"scale_gradients": 4.0, "unscale_gradients": 3.0, "has_overflow": 3.0},
          "04_dynamic_loss_scaling": {"DynamicLossScaler": 10.0}}
BERLIN = ZoneInfo("Europe/Berlin")
TOML = """
[defaults]
timezone = "Europe/Berlin"
late = { penalty_per_day = 0.1, grace_minutes = 15, max_days = 3 }

[assignments.hw1]
title = "Homework 1"
due = 2026-03-06T23:59:00
lessons = ["03_loss_scaling"]
exercises = { "04_dynamic_loss_scaling/DynamicLossScaler" = 5 }
extensions = { ann = 2, "s-bo" = "2026-03-20T12:00:00Z" }
select = "best"
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _hw1(tmp_path):
    return load_assignment(_write(tmp_path, "a.toml", TOML), "hw1", NATIVE)


def test_an_assignment_has_its_own_points_due_time_and_extensions(tmp_path):
    hw1 = _hw1(tmp_path)
    assert hw1.max_total == 15 and hw1.lessons == ["03_loss_scaling", "04_dynamic_loss_scaling"]
    assert hw1.points[("04_dynamic_loss_scaling", "DynamicLossScaler")] == (10.0, 5.0)
    assert hw1.due == datetime(2026, 3, 6, 23, 59, tzinfo=BERLIN) and hw1.select == "best"
    assert hw1.due_for(["ANN"]) == (hw1.due + timedelta(days=2), "ann")  # keys match in any case
    assert hw1.due_for(["bo", "s-bo"])[0] == datetime(2026, 3, 20, 12, tzinfo=timezone.utc)
    assert hw1.due_for(["cy"]) == (hw1.due, "")
    assert whole_course(NATIVE).max_total == 20


@pytest.mark.parametrize("change, says", [
    ('lessons = ["09_nope"]', "lesson '09_nope' is not in the course"),
    ('exercises = { "03_loss_scaling/nope" = 1 }', "exercise '03_loss_scaling/nope' is not in the course"),
    ('timezone = "Mars/Olympus"', "unknown timezone"),
    ("due = 2026-03-06", "has no time of day"),
    ('due = "next friday"', "is not a date and time"),
    ("late = { penalty_per_day = 10 }", "between 0 and 1"),
    ("late = { penalty_per_dya = 0.1 }", "unknown key 'penalty_per_dya'"),
    ('select = "first"', "select = 'first'"),
    ('visibility = "sometimes"', "visibility = 'sometimes'"),
    ('dew = 2026-03-06T23:59:00', "unknown key 'dew'"),
])
def test_a_wrong_assignments_file_says_where_and_what_to_do(tmp_path, change, says):
    lessons = "" if change.startswith("lessons") else 'lessons = ["03_loss_scaling"]\n'
    text = f"[assignments.hw9]\n{lessons}{change}\n"
    with pytest.raises(AssignmentError, match=says.replace("(", r"\(").replace(")", r"\)")) as info:
        load_assignments(_write(tmp_path, "a.toml", text), NATIVE)
    assert "[assignments.hw9]" in str(info.value)


def test_an_unknown_assignment_lists_the_known_ones(tmp_path):
    with pytest.raises(AssignmentError, match="no assignment 'hw7'; it names hw1"):
        load_assignment(_write(tmp_path, "a.toml", TOML), "hw7", NATIVE)


def test_lateness_counts_started_days_from_the_due_time_after_the_grace_period():
    policy, due = LatePolicy(0.1, 15, 3), datetime(2026, 3, 6, 23, 59, tzinfo=BERLIN)
    assert policy.lateness(due + timedelta(minutes=14), due).factor == 1.0
    just_late = policy.lateness(due + timedelta(minutes=16), due)
    assert (just_late.days, just_late.factor) == (1, 0.9)
    assert policy.lateness(due + timedelta(days=2, minutes=1), due).days == 3
    assert policy.lateness(due + timedelta(days=3, minutes=1), due).factor == 0.0  # past max_days
    assert policy.lateness(None, due).factor == policy.lateness(due, None).factor == 1.0


def _c(name, day, points, gradable=True):
    return Candidate(name, datetime(2026, 3, day, tzinfo=timezone.utc), "csv", points, gradable)


def test_latest_takes_the_latest_and_best_the_best_with_stated_tie_breaks():
    files = [_c("a.ipynb", 1, 10), _c("b.ipynb", 3, 2), _c("c.ipynb", 2, 7)]
    chosen, why = choose(files, "latest")
    assert chosen.name == "b.ipynb" and "rule 'latest': the latest" in why and "a.ipynb: submitted" in why
    assert choose(files, "best")[0].name == "a.ipynb"
    tied = [_c("a.ipynb", 1, 3), _c("b.ipynb", 1, 9)]
    chosen, why = choose(tied, "latest")
    assert chosen.name == "b.ipynb" and "the better score decides" in why
    assert choose([_c("a.ipynb", 1, 5), _c("b.ipynb", 2, 5)], "best")[0].name == "b.ipynb"
    assert choose([_c("only.ipynb", 1, 5)], "latest") == (_c("only.ipynb", 1, 5), "")


def test_a_file_that_could_not_be_graded_never_beats_one_that_could():
    files = [_c("good.ipynb", 1, 8), _c("broken.ipynb", 5, 0, gradable=False)]
    chosen, why = choose(files, "latest")
    assert chosen.name == "good.ipynb" and "broken.ipynb: could not be graded" in why
    assert choose([_c("broken.ipynb", 5, 0, gradable=False)], "latest")[0].name == "broken.ipynb"


ROSTER = "submission,student_id,name,email\nann,s1,Ann Lee,ann@x.org\nAnn Leo,s2,Ann Leo,leo@x.org\n"


def test_a_roster_matches_exact_names_and_lms_prefixes_longest_first(tmp_path):
    roster = load_roster(_write(tmp_path, "r.csv", "\ufeff" + ROSTER))  # Excel's byte-order mark is fine
    assert roster.match("ANN").student_id == "s1"
    assert roster.match("ann_12345_assignsubmission_file_").student_id == "s1"
    assert roster.match("Ann Leo_77_assignsubmission_file_").student_id == "s2"
    assert roster.match("annabel") is None and roster.match("zed") is None
    assert roster.find("LEO@x.org").submission == "Ann Leo" and roster.find("s1").submission == "ann"
    assert roster.students[1].given_and_family() == ("Ann", "Leo")


@pytest.mark.parametrize("text, says", [
    ("submission,name,email\nann,Ann,a@x\n", "lacks student_id"),
    (ROSTER + "ann,s3,Ann Again,again@x.org\n", "submission 'ann' is already on line 2"),
    (ROSTER + "bob,s1,Bob,bob@x.org\n", "student_id 's1' is already on line 2"),
    ("submission,student_id,name,email\n../x,s1,X,x@x\n", "plain file or folder name"),
    ("submission,student_id,name,email\n", "no students"),
])
def test_a_broken_roster_is_refused_with_the_line(tmp_path, text, says):
    with pytest.raises(RosterError, match=says):
        load_roster(_write(tmp_path, "r.csv", text))


def test_overrides_set_or_adjust_and_need_a_reason(tmp_path):
    rows = load_overrides(_write(tmp_path, "o.csv", "learner,exercise,points,reason\n"
                                 "ann,has_overflow,2,hand-graded\ns2,total,-1.5,late by email\n"))
    assert [(o.value, o.relative) for o in rows] == [(2.0, False), (-1.5, True)]
    assert rows[0].apply(3) == 2 and rows[1].apply(10) == 8.5
    for body, says in (("ann,total,7,\n", "give a reason"), ("ann,total,seven,x\n", "not a number"),
                       ("ann,total,-7x,x\n", "not a number")):
        with pytest.raises(OverrideError, match=says):
            load_overrides(_write(tmp_path, "o.csv", "learner,exercise,points,reason\n" + body))
    with pytest.raises(OverrideError, match="header"):
        load_overrides(_write(tmp_path, "o.csv", "who,what,points,why\n"))


def test_submission_times_come_from_the_csv_else_the_file(tmp_path):
    times = load_times(_write(tmp_path, "t.csv", "file,submitted_at\nann/03.ipynb,2026-03-06T23:00:00\n"
                              "b.ipynb,2026-03-06T23:00:00+00:00\n"), "Europe/Berlin")
    assert times["ann/03.ipynb"] == datetime(2026, 3, 6, 23, tzinfo=BERLIN)
    assert times["b.ipynb"] == datetime(2026, 3, 6, 23, tzinfo=timezone.utc)
    other = _write(tmp_path, "c.ipynb", "{}")
    assert submitted_at("c.ipynb", other, times).source == "file modification time"
    with pytest.raises(TimesError, match="line 2"):
        load_times(_write(tmp_path, "t.csv", "file,submitted_at\nx.ipynb,soon\n"), "UTC")


# -- standings from made-up reports ------------------------------------------------

def _report(lesson: str, scores: dict[str, tuple[float, float]], status="graded", code=None) -> dict:
    tests = [{"name": f"test_{ex}", "exercise": ex, "score": got, "max_score": out_of,
              "status": "passed" if got == out_of else "failed",
              "message": "" if got == out_of else "Expected: 1\nGot: 2\nLikely cause: =cmd"}
             for ex, (got, out_of) in scores.items()]
    return {"lesson": lesson, "status": status, "tests": tests, "notices": [],
            "code": code if code is not None else {ex: f"def {ex}(): pass" for ex in scores}}


def _file(learner, name, report, day, hour=12):
    when = datetime(2026, 3, day, hour, tzinfo=BERLIN)
    return Submitted(learner, name, report, submitted=SubmittedAt(when, "csv"))


FULL_03 = {"scale_gradients": (4, 4), "unscale_gradients": (3, 3), "has_overflow": (3, 3)}


def test_a_standing_adds_up_and_every_writer_prints_its_total(tmp_path):
    hw1 = _hw1(tmp_path)
    roster = load_roster(_write(tmp_path, "r.csv", "submission,student_id,name,email\n"
                                "ann,s1,=Ann Lee,ann@x.org\nbo,s-bo,Bo Li,bo@x.org\ncy,s3,Cy,cy@x.org\n"))
    overrides = tuple(load_overrides(_write(tmp_path, "o.csv", "learner,exercise,points,reason\n"
                                            "s1,DynamicLossScaler,+1,explained the scaler in office hours\n")))
    files = [_file("ann", "ann/03.ipynb", _report("03_loss_scaling", FULL_03), 9),  # 3 days late, 2 extended
             _file("ann", "ann/04.ipynb", _report("04_dynamic_loss_scaling", {"DynamicLossScaler": (4, 10)}), 5),
             _file("bo", "bo/03.ipynb", _report("03_loss_scaling", FULL_03, "ungradable", {}), 6),
             _file("zed", "zed.ipynb", _report("04_dynamic_loss_scaling", {"DynamicLossScaler": (10, 10)}), 5)]
    result = {s.key: s for s in standings(files, ClassSetup(hw1, roster, overrides))}
    ann = result["ann"]
    # 10 for lesson 03, one day past her extension (-10%); 4/10 of 5 points plus 1 by override on time.
    assert ann.exercises[("04_dynamic_loss_scaling", "DynamicLossScaler")] == 3.0
    assert (ann.late_penalty, ann.total, ann.status) == (1.0, 12.0, "graded")
    assert ann.audit[0]["reason"] == "explained the scaler in office hours"
    assert (result["bo"].status, result["bo"].total) == ("ungradable", 0.0)
    assert (result["cy"].status, result["zed"].status) == ("no-submission", "not-on-roster")
    setup = list(result.values())
    book = {row["learner"]: row for row in csv.DictReader(io.StringIO(gradebook_csv(setup, hw1)))}
    assert book["ann"]["total"] == "12" and book["ann"]["name"] == "'=Ann Lee"
    assert "'=cmd" not in book["ann"]["notes"]
    canvas = list(csv.reader(io.StringIO(canvas_csv(setup, hw1))))
    assert canvas[0] == [*CANVAS_STUDENT_COLUMNS, "Homework 1"]
    assert canvas[1] == ["Points Possible", "", "", "", "", "15"]
    assert ["'=Ann Lee", "", "s1", "", "", "12"] in canvas and len(canvas) == 5  # zed has no roster entry
    moodle = list(csv.reader(io.StringIO(moodle_csv(setup, hw1))))
    assert moodle[0] == [*MOODLE_USER_COLUMNS, "Homework 1"] and ["'=Ann", "Lee", "s1", "ann@x.org", "12"] in moodle
    totals = [row for row in csv.DictReader(io.StringIO(long_csv(setup, hw1))) if row["exercise"] == "total"]
    assert {r["learner"]: r["points"] for r in totals} == {"ann": "12", "bo": "0", "cy": "0", "zed": "5"}
    results = learner_results(ann, hw1, 1.0)
    assert validate_results(results) == [] and results["score"] == 12.0
    assert round(sum(t["score"] for t in results["tests"]), 6) == 12.0


def test_cells_changed_is_its_own_status_with_the_reason_in_the_notes(tmp_path):
    hw1 = _hw1(tmp_path)
    report = _report("03_loss_scaling", {**FULL_03, "has_overflow": (0, 3)},
                     code={"scale_gradients": "x", "unscale_gradients": "y"})
    report["tests"][-1]["message"] = "the exercise cell for has_overflow is a markdown cell; change it back"
    [s] = standings([_file("ann", "ann.ipynb", report, 5)], ClassSetup(hw1))
    assert s.status == "cells-changed" and "has_overflow is a markdown cell" in " ".join(s.notes)


def test_files_for_other_lessons_count_nothing_and_say_so(tmp_path):
    hw1 = load_assignment(_write(tmp_path, "a.toml", '[assignments.hw1]\nlessons = ["03_loss_scaling"]\n'),
                          "hw1", NATIVE)
    [s] = standings([_file("ann", "ann/04.ipynb", _report("04_dynamic_loss_scaling", {"DynamicLossScaler": (10, 10)}),
                           5)], ClassSetup(hw1))
    assert (s.status, s.total) == ("no-submission", 0.0)
    assert s.notes == ["ann/04.ipynb: 04_dynamic_loss_scaling is not part of hw1; not counted"]


def test_the_course_assignments_load_and_the_readme_states_the_real_course_total():
    root = Path(__file__).resolve().parents[1]
    native = native_points(root)
    assignments = load_assignments(root / "assignments.toml", native)
    covered = {lesson for a in assignments.values() for (lesson, _) in a.points}
    assert covered == set(native), f"lessons in no assignment: {sorted(set(native) - covered)}"
    total = whole_course(native).max_total
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert f"({total:g} in all)" in readme, f"README.md should say the whole course is worth {total:g}"
