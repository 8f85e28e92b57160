"""Reading notebooks: a learner's submission and the official lessons.

Only cells are read here; nothing is executed. A submission contributes its
exercise cells (found by metadata) and nothing else: the support cells come
from the official lesson in `notebooks/`, so an edited setup cell or a deleted
self-check changes nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from grader.intake import MAX_FILE_BYTES, RefusedFile, read_regular
from grader.learner import ExerciseCode
from grader.wire import skeleton

EXERCISE_TAG = "exercise"
SUPPORT_TAG = "exercise-support"
SELF_CHECK_TAG = "self-check"


class NotebookError(Exception):
    """A file that cannot be read as a course notebook; the message says why and what to do."""


def read_notebook(path: Path, max_bytes: int = MAX_FILE_BYTES, outputs: bool = True
                  ) -> nbformat.NotebookNode:
    """Read a notebook from a regular file of at most `max_bytes`.

    A submission is hostile until read: its size, its number of JSON values and
    its nesting are bounded before nbformat (whose validation costs far more per
    value than the JSON parser) sees it. With `outputs=False` the code cells'
    outputs, which grading never reads, are dropped first.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise NotebookError(f"{path}: no such file; check the path.")
    if path.is_dir() and not path.is_symlink():
        raise NotebookError(f"{path}: is a folder, not a notebook; pass the .ipynb file.")
    try:
        raw = read_regular(path, max_bytes)
    except RefusedFile as exc:
        raise NotebookError(f"{path}: {exc}.") from None
    if not raw.strip():
        raise NotebookError(f"{path}: the file is empty; submit the saved notebook (.ipynb).")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotebookError(f"{path}: is a binary file, not a notebook; submit the .ipynb "
                            "file saved from Jupyter.") from None
    if json_values(raw) > MAX_JSON_VALUES:
        raise NotebookError(f"{path}: holds more than {MAX_JSON_VALUES:,} JSON values, far more than "
                            "a course notebook; clear its outputs (Edit > Clear Outputs of All "
                            "Cells), save it, and submit it again.")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(f"{path}: is not a notebook (not valid JSON: {exc.msg} at line "
                            f"{exc.lineno}); re-download it from Jupyter with File > Save.") from None
    except (RecursionError, ValueError) as exc:
        raise NotebookError(f"{path}: is not a notebook ({_nested_or(exc)}); re-download it "
                            "from Jupyter with File > Save.") from None
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        raise NotebookError(f"{path}: is JSON but not a notebook (no cells).")
    major = data.get("nbformat")
    if major != 4:
        raise NotebookError(f"{path}: is notebook format v{_short(major)}; this course needs v4. "
                            "Open it in JupyterLab and save it again, which converts it.")
    if not outputs:
        for cell in data["cells"] if isinstance(data["cells"], list) else ():
            if isinstance(cell, dict) and "outputs" in cell:
                cell["outputs"] = []
    depth, values = _shape(data)
    if depth > MAX_DEPTH:
        raise NotebookError(f"{path}: its JSON is nested more than {MAX_DEPTH} levels deep, which "
                            "no notebook saved by Jupyter is; re-download it with File > Save.")
    if values > MAX_MODEL_VALUES:
        raise NotebookError(f"{path}: its cells and metadata hold more than {MAX_MODEL_VALUES:,} "
                            "JSON values; remove the bulk (large metadata or attachments) and "
                            "submit it again.")
    try:
        nb = nbformat.reads(text if outputs else json.dumps(data), as_version=4)
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds
        raise NotebookError(f"{path}: could not be read as a notebook ({_short(exc)}).") from None
    return nb


# JSON values a notebook may hold: json.loads costs ~0.1 µs each, nbformat's
# model and validation ~3 µs each, so each bound keeps a crafted file under a
# second where a 20 MB `[{},{},…]` once took 23 s and 4 GB. The course's own
# notebooks hold about a thousand values once outputs are dropped.
MAX_JSON_VALUES = 2_000_000
MAX_MODEL_VALUES = 200_000
MAX_DEPTH = 64


def json_values(raw: bytes) -> int:
    """An upper bound on the values in a JSON text, counted before parsing it."""
    bare = skeleton(raw)
    return bare.count(b",") + bare.count(b"{") + bare.count(b"[") + 1


def _shape(data) -> tuple[int, int]:
    """(depth, number of values) of parsed JSON, walked level by level, no recursion;
    the walk stops as soon as either is over its bound."""
    level, depth, values = [data], 0, 0
    while level and depth <= MAX_DEPTH and values <= MAX_MODEL_VALUES:
        depth += 1
        values += len(level)
        below: list = []
        for value in level:
            if type(value) is dict:
                below.extend(value.values())
            elif type(value) is list:
                below.extend(value)
        level = below
    return depth, values


def _nested_or(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return f"its JSON is nested more than {MAX_DEPTH} levels deep"
    return f"not valid JSON: {_short(exc)}"


def _short(value, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


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
