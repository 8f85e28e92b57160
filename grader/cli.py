"""Command line: argument parsing only; every command delegates.

Exit codes: 0 when the command did its job (a report was produced, whatever the
score), 2 for a usage error (one clear line on stderr), 1 when the grader
itself failed (a broken hidden check, for the instructor to fix).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grader import __version__
from grader.config import GraderConfig
from grader.escape import terminal

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, never a traceback
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m grader", description="Autograder for the mixed-precision course.")
    parser.add_argument("--version", action="version", version=f"grader {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("grade", help="grade one submitted notebook")
    g.add_argument("submission", type=Path, help="the learner's .ipynb file")
    g.add_argument("--json", type=Path, metavar="REPORT.json", help="also write the report as JSON")
    g.add_argument("--lesson", help="the lesson id, if the notebook lost its metadata")
    g.add_argument("--seed", type=int, help="seed for the drawn examples (default: fixed)")
    g.add_argument("--timeout", type=float, help="seconds allowed per check (default 10)")
    _limits(g)

    c = sub.add_parser("grade-class", help="grade a folder of submissions in parallel")
    c.add_argument("submissions", type=Path, help="one notebook or one folder per learner")
    c.add_argument("--out", type=Path, required=True, help="where reports and the gradebook go")
    c.add_argument("--jobs", type=int, help="grading processes (default: all cores)")
    c.add_argument("--seed", type=int, help="seed for the drawn examples (default: fixed)")
    c.add_argument("--timeout", type=float, help="seconds allowed per check (default 10)")
    from grader.classbook import add_arguments  # assignments, roster, overrides, submission times
    add_arguments(c)
    _limits(c)
    c.add_argument("--no-sandbox", action="store_true",
                   help="grade even where learner code cannot be walled in (see README)")

    r = sub.add_parser("regrade", help="grade a submission again from a report's receipt")
    r.add_argument("report", type=Path, help="a JSON report written by grade or grade-class")
    r.add_argument("submission", type=Path, help="the notebook that report was made from")

    rel = sub.add_parser("release", help="build the learner bundle (notebooks + public self-checks)")
    rel.add_argument("out", type=Path, help="an empty or new folder")

    gs = sub.add_parser("gradescope", help="build a Gradescope autograder zip")
    gs.add_argument("zip", type=Path, help="the .zip file to write")
    gs.add_argument("--assignment", metavar="ID", help="grade this assignment of assignments.toml")
    gs.add_argument("--assignments", type=Path, metavar="FILE", help="the assignments file "
                    "(default: assignments.toml in the course)")

    fb = sub.add_parser("feedback", help="one HTML feedback page per learner, from grade-class results")
    fb.add_argument("out", type=Path, help="the --out folder of grade-class")
    fb.add_argument("--to", type=Path, required=True, help="where the pages go")

    x = sub.add_parser("refresh", help="re-run solution notebooks, store their outputs, and check "
                                       "that those hold on other CPUs")
    x.add_argument("notebooks", type=Path, nargs="+", help="solutions/NN_name.ipynb ...")

    n = sub.add_parser("generate", help="regenerate notebooks/ from solutions/")
    n.add_argument("--solutions", type=Path, default=None, help="source folder (default: solutions/)")
    n.add_argument("--out", type=Path, default=None, help="output folder (default: notebooks/)")
    return parser


def _limits(parser) -> None:
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="seconds for all of one submission's checks together (default 60)")
    parser.add_argument("--max-file-mb", type=float, metavar="MB",
                        help="largest submitted file read, in MB (default 20)")


def _config(args) -> GraderConfig:
    changes = {}
    if getattr(args, "seed", None) is not None:
        changes["seed"] = args.seed
    if getattr(args, "timeout", None) is not None:
        if args.timeout <= 0:
            raise _Usage("--timeout must be a positive number of seconds")
        changes["check_timeout"] = args.timeout
    if getattr(args, "budget", None) is not None:
        if args.budget <= 0:
            raise _Usage("--budget must be a positive number of seconds")
        changes["submission_budget"] = args.budget
    if getattr(args, "max_file_mb", None) is not None:
        if args.max_file_mb <= 0:
            raise _Usage("--max-file-mb must be a positive number of MB")
        changes["max_file_size"] = int(args.max_file_mb * 2**20)
    if getattr(args, "no_sandbox", False):
        changes["isolate"] = False
    return GraderConfig(**changes)


class _Usage(Exception):
    pass


def _grade(args) -> int:
    from grader.grade import GraderError, UnknownLesson, grade
    from grader.notebook import NotebookError
    from grader.report import summary, write_json

    config = _config(args)
    if not str(args.submission).endswith(".ipynb") and args.submission.is_file():
        raise _Usage(f"{args.submission}: not a notebook (expected a .ipynb file)")
    try:
        report = grade(args.submission, config, args.lesson)
    except UnknownLesson as exc:  # only `grade` has --lesson; grade-class's notes must not advise it
        raise _Usage(f"{exc} Or pass --lesson ID.") from None
    except NotebookError as exc:
        raise _Usage(str(exc)) from None
    except GraderError as exc:
        print(f"grader: internal error: {terminal(str(exc))}", file=sys.stderr)
        return 1
    print(summary(report, str(args.submission)))  # escaped for the terminal
    from grader.sandbox import refusal
    if config.isolate and refusal(config):  # fine for one's own notebook; say so, once
        print("Note: no full sandbox on this machine, so this notebook's code ran with your own "
              "permissions: fine for your own work, not for grading others' (see README).",
              file=sys.stderr)
    if args.json:
        write_json(report, args.json)
        print(f"Report written to {args.json}")
    return 0


def _generate(args) -> int:
    from grader.generate import generate
    from grader.markers import MarkerError
    from grader.notebook import NotebookError

    config = GraderConfig()
    solutions = args.solutions or config.course_root / "solutions"
    out = args.out or config.course_root / "notebooks"
    if not solutions.is_dir():
        raise _Usage(f"{solutions}: no such folder of solution notebooks")
    try:
        written = generate(solutions, out)
    except (MarkerError, NotebookError) as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def _grade_class(args) -> int:
    from grader.batch import grade_class

    config = _config(args)
    if not args.submissions.is_dir():
        raise _Usage(f"{args.submissions}: not a folder of submissions")
    if args.jobs is not None and args.jobs < 1:
        raise _Usage("--jobs must be at least 1")
    if args.out.resolve() == args.submissions.resolve() or args.out.resolve().is_relative_to(args.submissions.resolve()):
        raise _Usage("--out must be outside the submissions folder")
    from grader.batch import discover
    from grader.classbook import SetupError, class_run
    try:  # every option's file is checked before grading starts, not after an hour of grading
        run = class_run(args, config.course_root, [item.learner for item in discover(args.submissions)])
    except SetupError as exc:
        raise _Usage(str(exc)) from None
    from grader.sandbox import close_zygotes, in_force, refusal
    problem = None if args.no_sandbox else refusal(config, (args.submissions, args.out))
    close_zygotes()  # the one that found out; the grading processes start their own
    if problem:
        print(f"python -m grader grade-class: refusing to start: {terminal(problem)}.", file=sys.stderr)
        return USAGE_ERROR
    try:
        result = grade_class(args.submissions, args.out, config, args.jobs, setup=run)
    except KeyboardInterrupt:
        print(("\n" if sys.stderr.isatty() else "") + "interrupted: every report already written is kept "
              f"under {terminal(str(args.out))}/reports; run the same command again to grade the rest.",
              file=sys.stderr)
        return 130
    ungradable = sum(1 for d in result.reports.values() if d["status"] != "graded")
    print(f"{len(result.items)} submissions: {result.graded} graded now, {result.skipped} unchanged "
          f"since the last run, {ungradable} ungradable; {result.seconds:.1f} s.")
    if result.stale:
        print(f"Moved {result.stale} outputs of files no longer submitted to "
              f"{terminal(str(args.out / 'stale'))}/.")
    for line in result.outputs:
        print(terminal(line))
    print(f"Gradebook: {terminal(str(args.out / 'gradebook.csv'))}; grades, reports, review pages, "
          f"Gradescope files, LMS exports and statistics (stats/index.html) under {terminal(str(args.out))}/")
    print(f"Sandbox {in_force(config).sentence()}")
    return 0


def _regrade(args) -> int:
    from grader.regrade import RegradeError, regrade

    try:
        same, lines = regrade(args.report, args.submission)
    except RegradeError as exc:
        raise _Usage(str(exc)) from None
    print(terminal("\n".join(lines)))
    return 0 if same else 1


def _release(args) -> int:
    from grader.release import ReleaseError, build_release

    try:
        path = build_release(args.out, GraderConfig().course_root)
    except ReleaseError as exc:
        raise _Usage(str(exc)) from None
    print(f"Learner bundle written to {path}")
    return 0


def _gradescope(args) -> int:
    from grader.assignments import AssignmentError, load_assignment, native_points
    from grader.gradescope import build_autograder_zip

    if args.zip.suffix != ".zip":
        raise _Usage(f"{args.zip}: the output should end in .zip")
    root = GraderConfig().course_root
    assignments = args.assignments or root / "assignments.toml"
    if args.assignment:  # the zip grades one assignment: check it now, not on Gradescope
        try:
            load_assignment(assignments, args.assignment, native_points(root))
        except AssignmentError as exc:
            raise _Usage(str(exc)) from None
    elif args.assignments:
        raise _Usage("--assignments needs --assignment ID too")
    path = build_autograder_zip(args.zip, root, args.assignment, assignments)
    print(f"Gradescope autograder written to {path}")
    return 0


def _feedback(args) -> int:
    from grader.feedback import FeedbackError, write_feedback

    try:
        pages = write_feedback(args.out, args.to)
    except FeedbackError as exc:
        raise _Usage(str(exc)) from None
    print(f"{len(pages)} feedback pages written to {args.to}/")
    return 0


def _refresh(args) -> int:
    from grader.portability import PortabilityError, differing_cells
    from grader.refresh import RefreshError, official_solution, refresh

    try:  # refresh runs every cell with full access: only the course's own lessons may run here
        paths = [official_solution(path, GraderConfig().course_root) for path in args.notebooks]
    except RefreshError as exc:
        raise _Usage(str(exc)) from None

    portable = True
    for path in paths:
        print(f"{path}: ran in {refresh(path):.1f} s; checking that its outputs hold on other CPUs…")
        try:
            differences = differing_cells(path)
        except PortabilityError as exc:
            print(f"{path}: the portability check could not run: {exc}", file=sys.stderr)
            return 1
        for difference in differences:
            portable = False
            print(f"{path}: not portable: {difference}\n{difference.detail}", file=sys.stderr)
    if not portable:
        print("Print what every CPU agrees on (fewer digits, a verdict), or tag the cell "
              "nbval-ignore-output and assert its claim in tests/ (docs/authoring.md).", file=sys.stderr)
    return 0 if portable else 1


COMMANDS = {"refresh": _refresh, "grade": _grade, "grade-class": _grade_class, "regrade": _regrade,
            "release": _release, "gradescope": _gradescope, "generate": _generate, "feedback": _feedback}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except _Usage as exc:
        print(f"python -m grader {args.command}: error: {terminal(str(exc))}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as other Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
