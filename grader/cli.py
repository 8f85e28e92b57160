"""Command line: argument parsing only; every command delegates.

Exit codes: 0 when the command did its job (a report was produced, whatever the
score), 2 for a usage error (one clear line on stderr), 1 when the grader
itself failed (a broken hidden check, for the instructor to fix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader import __version__
from grader.config import GraderConfig

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

    n = sub.add_parser("generate", help="regenerate notebooks/ from solutions/")
    n.add_argument("--solutions", type=Path, default=None, help="source folder (default: solutions/)")
    n.add_argument("--out", type=Path, default=None, help="output folder (default: notebooks/)")
    return parser


def _config(args) -> GraderConfig:
    changes = {}
    if getattr(args, "seed", None) is not None:
        changes["seed"] = args.seed
    if getattr(args, "timeout", None) is not None:
        if args.timeout <= 0:
            raise _Usage("--timeout must be a positive number of seconds")
        changes["check_timeout"] = args.timeout
    return GraderConfig(**changes)


class _Usage(Exception):
    pass


def _grade(args) -> int:
    from grader.grade import GraderError, grade
    from grader.notebook import NotebookError
    from grader.report import summary, write_json

    config = _config(args)
    if not str(args.submission).endswith(".ipynb") and args.submission.is_file():
        raise _Usage(f"{args.submission}: not a notebook (expected a .ipynb file)")
    try:
        report = grade(args.submission, config, args.lesson)
    except NotebookError as exc:
        raise _Usage(str(exc)) from None
    except GraderError as exc:
        print(f"grader: internal error: {exc}", file=sys.stderr)
        return 1
    print(summary(report, str(args.submission)))
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


COMMANDS = {"grade": _grade, "generate": _generate}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except _Usage as exc:
        print(f"python -m grader {args.command}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
