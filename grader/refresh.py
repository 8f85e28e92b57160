"""Re-run a solution notebook and store its fresh outputs (what nbval compares).

A refresh runs every cell in a plain kernel with this user's full access and
rewrites the file, so it only ever runs the course's own lessons,
`solutions/NN_name.ipynb`: never a learner's submission (grade it with
`python -m grader grade`, whose workers are walled in) and never the generated
`notebooks/` (regenerate them with `python -m grader generate`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

_LESSON = re.compile(r"[0-9][0-9]_\w+\.ipynb")


class RefreshError(Exception):
    """Not an official lesson in solutions/; the message says what to run instead."""


def official_solution(path: Path, course_root: Path) -> Path:
    """`path` itself, if it is one of the course's lessons in solutions/; else RefreshError."""
    solutions = (Path(course_root) / "solutions").resolve()
    lessons = sorted(p.name for p in solutions.glob("[0-9][0-9]_*.ipynb"))
    resolved = Path(path).resolve()
    if resolved.parent != solutions or not _LESSON.fullmatch(resolved.name) or resolved.name not in lessons:
        raise RefreshError(
            f"{path}: refresh only re-runs the course's own lessons, solutions/NN_name.ipynb "
            f"({', '.join(lessons) or 'none found'}), because it runs every cell with full access to this "
            "machine and rewrites the file. To grade a learner's notebook use `python -m grader grade FILE`; "
            "to rebuild notebooks/ use `python -m grader generate`.")
    return Path(path)


def execute(path: Path, timeout: float = 600) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook top to bottom in its own folder; return it and the seconds taken."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    return nb, time.perf_counter() - start


def refresh(path: Path, course_root: Path | None = None) -> float:
    """Re-run an official lesson in solutions/ and store its outputs; seconds taken."""
    if course_root is None:
        from grader.config import COURSE_ROOT
        course_root = COURSE_ROOT
    path = official_solution(path, course_root)
    nb, seconds = execute(path)
    nbformat.write(nb, path)
    return seconds
