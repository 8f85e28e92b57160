"""Grade one submission: read it, find its lesson, run the hidden checks."""

from __future__ import annotations

from pathlib import Path

from grader import __version__
from grader.config import GraderConfig
from grader.learner import Submission
from grader.notebook import Lesson, NotebookError, extract_exercises, lesson_id, read_notebook
from grader.receipt import file_sha256, make_receipt
from grader.results import Report
from grader.runner import checks_file, run_checks


class GraderError(Exception):
    """The grader itself cannot do its job (a missing lesson or broken checks)."""


def official_lessons(config: GraderConfig) -> dict[str, Path]:
    folder = Path(config.course_root) / "notebooks"
    return {p.stem: p for p in sorted(folder.glob("[0-9][0-9]_*.ipynb"))}


def find_lesson(nb, path: Path, config: GraderConfig, override: str | None = None) -> Lesson:
    lessons = official_lessons(config)
    wanted = override or lesson_id(nb, path)
    if wanted is None:
        # A learner who stripped the metadata still named the file after the lesson.
        wanted = next((lid for lid in lessons if Path(path).stem.startswith(lid)), None)
    if wanted is None:
        raise NotebookError(f"{path}: cannot tell which lesson this is (no course metadata and "
                            f"an unknown file name); pass --lesson, one of: {', '.join(lessons)}.")
    if wanted not in lessons:
        raise NotebookError(f"{path}: lesson {wanted!r} is not in this course; known lessons: "
                            f"{', '.join(lessons) or 'none'}.")
    if not checks_file(wanted).exists():
        raise GraderError(f"lesson {wanted} has no hidden checks ({checks_file(wanted)}).")
    return Lesson.from_notebook(lessons[wanted])


def grade(path: Path, config: GraderConfig | None = None, lesson: str | None = None) -> Report:
    """Grade a notebook. Raises NotebookError for a file that is not a usable notebook."""
    config = config or GraderConfig()
    nb = read_notebook(Path(path))
    official = find_lesson(nb, Path(path), config, lesson)
    extracted = extract_exercises(nb, official)
    with Submission(extracted.code, config) as submission:
        results, errors = run_checks(official.id, submission, config.seed)
    if errors:
        raise GraderError(f"the hidden checks for {official.id} failed to run:\n" + "\n".join(errors))
    order = {name: i for i, name in enumerate(official.exercises)}
    results.sort(key=lambda r: order.get(r.exercise, len(order)))
    receipt = make_receipt(official.id, extracted.code, config.seed)
    receipt["file_sha256"] = file_sha256(Path(path))
    return Report(lesson=official.id, tests=results, notices=extracted.notices, receipt=receipt)


def guess_lesson(path: Path, config: GraderConfig) -> str:
    return next((lid for lid in official_lessons(config) if Path(path).stem.startswith(lid)), "unknown")


def grade_file(path: Path, config: GraderConfig | None = None) -> Report:
    """Like `grade`, but a file that is not a usable notebook becomes an
    "ungradable" report with the reason, instead of an exception."""
    config = config or GraderConfig()
    try:
        return grade(path, config)
    except NotebookError as exc:
        message = str(exc).replace(f"{path}: ", "", 1)
        return Report(lesson=guess_lesson(path, config), tests=[], notices=[message],
                      status="ungradable",
                      receipt={"file_sha256": file_sha256(Path(path)) if Path(path).is_file() else None,
                               "grader_version": __version__})
