"""Generate the learner notebooks in `notebooks/` from the sources in `solutions/`.

Each exercise cell's solution regions become a stub that raises
NotImplementedError naming the exercise; outputs and execution counts are
cleared; cell ids, tags and the lesson metadata are kept, so the grader can
tell which lesson and which exercise a submission's cells belong to.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

from grader.markers import MarkerError, has_markers, strip_solutions
from grader.notebook import EXERCISE_TAG, cell_exercise, has_tag, read_notebook

KEPT_CELL_METADATA = ("tags", "course")
KEPT_NB_METADATA = ("kernelspec", "language_info", "course")
_HEADER = re.compile(r"^###\s+Exercise\s+(?P<number>[\d.]+)\s+[—-]+\s+`?(?P<name>\w+)`?", re.M)


def exercise_numbers(nb) -> dict[str, str]:
    """Exercise name to its number, read from the markdown headers ("Exercise 3.1 — name")."""
    numbers = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for m in _HEADER.finditer(cell.source):
                numbers[m["name"]] = m["number"]
    return numbers


def learner_version(solution: nbformat.NotebookNode, source_name: str) -> nbformat.NotebookNode:
    nb = copy.deepcopy(solution)
    numbers = exercise_numbers(nb)
    nb.metadata = {k: nb.metadata[k] for k in KEPT_NB_METADATA if k in nb.metadata}
    nb.metadata.setdefault("course", {})["generated_from"] = f"solutions/{source_name}; edit that file"
    for index, cell in enumerate(nb.cells, start=1):
        where = f"solutions/{source_name}, cell {index}"
        cell.metadata = {k: cell.metadata[k] for k in KEPT_CELL_METADATA if k in cell.metadata}
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        cell.execution_count = None
        if not has_markers(cell.source):
            continue
        name = cell_exercise(cell)
        if not has_tag(cell, EXERCISE_TAG) or name is None:
            raise MarkerError(f"{where}: solution markers are only allowed in a cell tagged "
                              f"'{EXERCISE_TAG}' with metadata course.exercise.")
        label = f"Exercise {numbers[name]}: {name}" if name in numbers else f"Exercise: {name}"
        cell.source = strip_solutions(cell.source, f"raise NotImplementedError({label!r})", where)
    return nb


def generate(solutions: Path, notebooks: Path) -> list[Path]:
    """Write a learner version of every solution notebook; return the paths written."""
    notebooks.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(Path(solutions).glob("*.ipynb")):
        nb = learner_version(read_notebook(source), source.name)
        target = notebooks / source.name
        text = nbformat.writes(nb) + "\n"
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
