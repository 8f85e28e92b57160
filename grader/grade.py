"""Grade one submission: read it, find its lesson, run the hidden checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from grader import __version__
from grader.config import GraderConfig
from grader.learner import Submission
from grader.notebook import (Extracted, Lesson, NotebookError, extract_exercises, lesson_id,
                             read_notebook)
from grader.receipt import file_sha256, make_receipt
from grader.results import Report
from grader.runner import checks_file, run_checks


class GraderError(Exception):
    """The grader itself cannot do its job (a missing lesson or broken checks)."""


class UnknownLesson(NotebookError):
    """Neither the notebook's metadata nor its file name says which lesson it is."""


def official_lessons(config: GraderConfig) -> dict[str, Path]:
    folder = Path(config.course_root) / "notebooks"
    return {p.stem: p for p in sorted(folder.glob("[0-9][0-9]_*.ipynb"))}


def find_lesson(nb, path: Path, config: GraderConfig, override: str | None = None) -> Lesson:
    lessons = official_lessons(config)
    wanted = override or lesson_id(nb)
    if wanted is None:
        # A learner who stripped the metadata still named the file after the lesson.
        wanted = next((lid for lid in lessons if Path(path).stem.startswith(lid)), None)
    if wanted is None:
        raise UnknownLesson(f"{path}: cannot tell which lesson this is (no course metadata, and the file "
                            f"name does not start with a lesson id); rename the file to start with its "
                            f"lesson id, one of: {', '.join(lessons)}.")
    if wanted not in lessons:
        raise NotebookError(f"{path}: lesson {wanted!r} is not in this course; known lessons: "
                            f"{', '.join(lessons) or 'none'}.")
    if not checks_file(wanted).exists():
        raise GraderError(f"lesson {wanted} has no hidden checks ({checks_file(wanted)}).")
    return Lesson.from_notebook(lessons[wanted])


@dataclass
class _Prepared:
    path: Path
    lesson: Lesson
    extracted: Extracted


def _prepare(path: Path, config: GraderConfig, lesson: str | None = None) -> _Prepared:
    nb = read_notebook(Path(path), config.max_file_size, outputs=False)
    official = find_lesson(nb, Path(path), config, lesson)
    return _Prepared(Path(path), official, extract_exercises(nb, official))


def _grade_prepared(batch: list[_Prepared], config: GraderConfig) -> list[Report]:
    """Grade submissions of one lesson in one pytest session."""
    official = batch[0].lesson
    submissions = [Submission(p.extracted.code, config) for p in batch]
    results, seconds, errors = run_checks(official.id, submissions, config.seed)
    if errors:
        raise GraderError(f"the hidden checks for {official.id} failed to run:\n" + "\n".join(errors))
    order = {name: i for i, name in enumerate(official.exercises)}
    reports = []
    for prepared, tests, took in zip(batch, results, seconds):
        tests.sort(key=lambda r: order.get(r.exercise, len(order)))
        receipt = make_receipt(official.id, prepared.extracted.code, config.seed, config.isolate)
        receipt["file_sha256"] = file_sha256(prepared.path)
        reports.append(Report(lesson=official.id, tests=tests, notices=prepared.extracted.notices,
                              receipt=receipt, seconds=round(took, 4),
                              code={name: c.source for name, c in prepared.extracted.code.items()
                                    if c.source is not None}))
    return reports


def grade(path: Path, config: GraderConfig | None = None, lesson: str | None = None) -> Report:
    """Grade a notebook. Raises NotebookError for a file that is not a usable notebook."""
    config = config or GraderConfig()
    return _grade_prepared([_prepare(path, config, lesson)], config)[0]


def guess_lesson(path: Path, config: GraderConfig) -> str:
    return next((lid for lid in official_lessons(config) if Path(path).stem.startswith(lid)), "unknown")


def _ungradable(path: Path, config: GraderConfig, message: str) -> Report:
    try:
        digest = file_sha256(Path(path))
    except OSError:  # a link, FIFO or device: never read
        digest = None
    return Report(lesson=guess_lesson(path, config), tests=[], notices=[message], status="ungradable",
                  receipt={"file_sha256": digest, "grader_version": __version__})


def grade_many(paths: list[Path], config: GraderConfig | None = None) -> list[Report]:
    """Grade many files, one pytest session per lesson. A file that is not a
    usable notebook gets an "ungradable" report with the reason."""
    config = config or GraderConfig()
    reports: dict[int, Report] = {}
    by_lesson: dict[str, list[tuple[int, _Prepared]]] = {}
    for i, path in enumerate(paths):
        try:
            prepared = _prepare(path, config)
        except NotebookError as exc:
            reports[i] = _ungradable(path, config, str(exc).replace(f"{path}: ", "", 1))
            continue
        by_lesson.setdefault(prepared.lesson.id, []).append((i, prepared))
    for group in by_lesson.values():
        for (i, _), report in zip(group, _grade_prepared([p for _, p in group], config)):
            reports[i] = report
    return [reports[i] for i in range(len(paths))]


def grade_file(path: Path, config: GraderConfig | None = None) -> Report:
    return grade_many([path], config)[0]
