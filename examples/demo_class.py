"""A small demo class for homework 2, to try the instructor workflow on (README, "For instructors").

    .venv/bin/python examples/demo_class.py demo

writes demo/submissions/hw2/ (as an LMS download might look) and
demo/submitted_at.csv (when each file was handed in), matching examples/roster.csv:

- ada hands in lesson 04 twice: an unfinished notebook, then the finished one;
- sofia's files carry an LMS prefix (sofia_1002_...); her lesson 03 has a sign
  error, and her lesson 04 arrives 9 hours after the due time;
- alan turned an exercise cell into markdown (examples/overrides.csv restores its points);
- grace is on time, and gets a bonus point by override;
- Emmy's folder is named as Moodle names it, and she has an extension;
- kurt hands in nothing; zed is not on the roster.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from grader.notebook import EXERCISE_TAG, cell_exercise, has_tag

ROOT = Path(__file__).resolve().parent.parent
LESSONS = {"03": "03_loss_scaling", "04": "04_dynamic_loss_scaling"}


def _lesson(number: str, finished: bool = True) -> nbformat.NotebookNode:
    folder = "solutions" if finished else "notebooks"
    return nbformat.read(ROOT / folder / f"{LESSONS[number]}.ipynb", as_version=4)


def _exercise_cell(nb, name: str):
    return next(c for c in nb.cells if has_tag(c, EXERCISE_TAG) and cell_exercise(c) == name)


def _sign_error() -> nbformat.NotebookNode:
    nb = _lesson("03")
    _exercise_cell(nb, "scale_gradients").source = (
        "def scale_gradients(grads, scale):\n    return [-float(g) * scale for g in grads]\n")
    return nb


def _markdown_cell() -> nbformat.NotebookNode:
    nb = _lesson("03")
    cell = _exercise_cell(nb, "has_overflow")
    text = nbformat.v4.new_markdown_cell(cell.source)
    text.metadata = cell.metadata
    nb.cells[nb.cells.index(cell)] = text
    return nb


def build(folder: Path) -> None:
    hw2 = folder / "submissions" / "hw2"
    emmy = "Emmy Noether_105_assignsubmission_file_"
    files = {  # name in the download: (notebook, when it was handed in, London time)
        "ada/03_loss_scaling.ipynb": (_lesson("03"), "2026-10-08T20:00:00"),
        "ada/04_dynamic_loss_scaling.ipynb": (_lesson("04", finished=False), "2026-10-08T21:00:00"),
        "ada/04_dynamic_loss_scaling (1).ipynb": (_lesson("04"), "2026-10-09T22:30:00"),
        "sofia_1002_03_loss_scaling.ipynb": (_sign_error(), "2026-10-09T12:00:00"),
        "sofia_1002_04_dynamic_loss_scaling.ipynb": (_lesson("04"), "2026-10-10T09:00:00"),
        "alan/03_loss_scaling.ipynb": (_markdown_cell(), "2026-10-09T18:00:00"),
        "grace/03_loss_scaling.ipynb": (_lesson("03"), "2026-10-07T10:00:00"),
        "grace/04_dynamic_loss_scaling.ipynb": (_lesson("04"), "2026-10-07T10:05:00"),
        f"{emmy}/03_loss_scaling.ipynb": (_lesson("03"), "2026-10-11T16:00:00"),
        "zed.ipynb": (_lesson("03"), "2026-10-09T23:00:00"),
    }
    lines = ["file,submitted_at"]
    for name, (nb, when) in files.items():
        path = hw2 / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
        lines.append(f'"{name}",{when}')
    (folder / "submitted_at.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"Demo class written to {hw2}/ ({len(files)} files); submission times in {folder / 'submitted_at.csv'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/demo_class.py FOLDER")
    build(Path(sys.argv[1]))
