"""Reading notebooks: a learner's submission and the official lessons.

Only cells are read here; nothing is executed. A submission contributes its
exercise cells (found by metadata) and nothing else: the support cells come
from the official lesson in `notebooks/`, so an edited setup cell or a deleted
self-check changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from grader.learner import ExerciseCode

EXERCISE_TAG = "exercise"
SUPPORT_TAG = "exercise-support"
SELF_CHECK_TAG = "self-check"


class NotebookError(Exception):
    """A file that cannot be read as a course notebook; the message says why and what to do."""


def read_notebook(path: Path) -> nbformat.NotebookNode:
    path = Path(path)
    if not path.exists():
        raise NotebookError(f"{path}: no such file; check the path.")
    if path.is_dir():
        raise NotebookError(f"{path}: is a folder, not a notebook; pass the .ipynb file.")
    raw = path.read_bytes()
    if not raw.strip():
        raise NotebookError(f"{path}: the file is empty; submit the saved notebook (.ipynb).")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotebookError(f"{path}: is a binary file, not a notebook; submit the .ipynb "
                            "file saved from Jupyter.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(f"{path}: is not a notebook (not valid JSON: {exc.msg} at line "
                            f"{exc.lineno}); re-download it from Jupyter with File > Save.") from None
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        raise NotebookError(f"{path}: is JSON but not a notebook (no cells).")
    major = data.get("nbformat")
    if major != 4:
        raise NotebookError(f"{path}: is notebook format v{major}; this course needs v4. Open it "
                            "in JupyterLab and save it again, which converts it.")
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds
        raise NotebookError(f"{path}: could not be read as a notebook ({exc}).") from None
    return nb


def lesson_id(nb: nbformat.NotebookNode) -> str | None:
    course = nb.metadata.get("course", {})
    if isinstance(course, dict) and isinstance(course.get("lesson"), str):
        return course["lesson"]
    return None


def cell_exercise(cell) -> str | None:
    course = cell.get("metadata", {}).get("course", {})
    if isinstance(course, dict) and isinstance(course.get("exercise"), str):
        return course["exercise"]
    return None


def has_tag(cell, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


@dataclass
class Lesson:
    """An official lesson, read from its learner notebook in `notebooks/`."""

    id: str
    path: Path
    title: str
    exercises: list[str]
    support: tuple[str, ...]
    preload: tuple[str, ...] = field(default=())

    @classmethod
    def from_notebook(cls, path: Path) -> "Lesson":
        nb = read_notebook(path)
        lid = lesson_id(nb) or path.stem
        exercises = [cell_exercise(c) for c in nb.cells
                     if c.cell_type == "code" and has_tag(c, EXERCISE_TAG) and cell_exercise(c)]
        support = tuple(c.source for c in nb.cells
                        if c.cell_type == "code" and has_tag(c, SUPPORT_TAG))
        preload = tuple(m for m in ("numpy", "torch") if any(_imports(s, m) for s in support))
        title = nb.metadata.get("course", {}).get("title", lid)
        return cls(lid, Path(path), title, exercises, support, preload)


def _imports(source: str, module: str) -> bool:
    return any(line.strip().startswith((f"import {module}", f"from {module}"))
               for line in source.splitlines())


@dataclass
class Extracted:
    """The submission's exercise code, plus notices about how it was found."""

    code: dict[str, ExerciseCode]
    notices: list[str]


def extract_exercises(nb: nbformat.NotebookNode, lesson: Lesson) -> Extracted:
    """Find each exercise's cell in a submission, by metadata, never by text."""
    found: dict[str, list] = {name: [] for name in lesson.exercises}
    notices: list[str] = []
    for cell in nb.cells:
        name = cell_exercise(cell)
        if name in found and (has_tag(cell, EXERCISE_TAG) or cell.cell_type != "code"):
            found[name].append(cell)
    code = {}
    for name, cells in found.items():
        code_cells = [c for c in cells if c.cell_type == "code"]
        source, problem = None, ""
        if code_cells:
            source = to_python(code_cells[-1].source)
            if len(code_cells) > 1:
                notices.append(f"{name}: found {len(code_cells)} exercise cells; graded the last one.")
        elif cells:
            problem = (f"the exercise cell for {name} is a {cells[-1].cell_type} cell; change it "
                       "back to a code cell (in JupyterLab: select it and press Y).")
        else:
            problem = (f"no exercise cell for {name} was found (its cell metadata was lost or the "
                       "cell was deleted); copy your code into the exercise cell of a fresh copy "
                       "of the notebook.")
        code[name] = ExerciseCode(name, lesson.support, source, problem, lesson.preload)
    return Extracted(code, notices)


def to_python(source: str) -> str:
    """Turn IPython magics into plain Python, as the kernel would."""
    if not any(line.lstrip().startswith(("%", "!")) for line in source.splitlines()):
        return source
    from IPython.core.inputtransformer2 import TransformerManager
    return TransformerManager().transform_cell(source)
