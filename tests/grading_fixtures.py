"""Lesson-03 submissions, each named by the outcome it must get.

`python tests/grading_fixtures.py` writes them to tests/fixtures/grading/;
tests/test_grading_fixtures.py checks the files are current and grades each one.
A fixture replaces one exercise's cell; the others stay correct, so every
fixture also proves that the other exercises are still graded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

FOLDER = Path(__file__).resolve().parent / "fixtures" / "grading"

CORRECT = {
    "scale_gradients": (
        "def scale_gradients(grads: list[float], scale: float) -> list[float]:\n"
        "    return [float(g) * scale for g in grads]\n"),
    "unscale_gradients": (
        "def unscale_gradients(grads: list[float], scale: float) -> list[float]:\n"
        "    return [float(g) / scale for g in grads]\n"),
    "has_overflow": (
        "def has_overflow(grads: list[float]) -> bool:\n"
        "    return any(not math.isfinite(g) for g in grads)\n"),
    "choose_static_scale": (
        "def choose_static_scale(grad_stats, headroom=8.0):\n"
        "    tops = [s['max_abs'] for s in grad_stats]\n"
        "    if not tops or not all(math.isfinite(t) for t in tops) or max(tops) == 0:\n"
        "        raise ValueError('need finite max_abs values, not all 0')\n"
        "    scale = 2.0 ** math.floor(math.log2(65504 / (headroom * max(tops))))\n"
        "    while scale * headroom * max(tops) > 65504:\n"
        "        scale /= 2\n"
        "    while 2 * scale * headroom * max(tops) <= 65504:\n"
        "        scale *= 2\n"
        "    return {'scale': scale, 'limited_by': grad_stats[tops.index(max(tops))]['name'],\n"
        "            'underflowing': [s['name'] for s in grad_stats\n"
        "                             if s['low_abs'] > 0 and scale * s['low_abs'] <= 2.0 ** -25]}\n"),
    "measure_scale": (
        "def measure_scale(grads, scale):\n"
        "    out = {}\n"
        "    for name, g in grads.items():\n"
        "        h = (g * scale).to(torch.float16)\n"
        "        out[name] = {'numel': g.numel(), 'underflow': int(((g != 0) & (h == 0)).sum()),\n"
        "                     'subnormal': int(((h != 0) & (h.abs() < 2.0 ** -14)).sum()),\n"
        "                     'overflow': int(h.isinf().sum())}\n"
        "    return out\n"),
}
FULL = {"scale_gradients": 4.0, "unscale_gradients": 3.0, "has_overflow": 3.0,
        "choose_static_scale": 6.0, "measure_scale": 4.0}


@dataclass
class Fixture:
    name: str
    replace: dict[str, str]
    scores: dict[str, float]  # expected per-exercise scores; unlisted exercises get full marks
    statuses: set[str] = field(default_factory=set)  # statuses the replaced exercise must show
    message: str = ""  # text that must appear in one of its messages
    timeout: float = 10.0  # seconds per check; short for fixtures that hang on purpose


def _scale(body: str) -> dict[str, str]:
    return {"scale_gradients": "def scale_gradients(grads, scale):\n" + body}


FIXTURES = [
    Fixture("correct", {}, {}, {"passed"}),
    Fixture("wrong-sign", _scale("    return [-g * scale for g in grads]\n"),
            {"scale_gradients": 1.0}, {"failed"}, "sign"),
    Fixture("divides-instead-of-multiplies", _scale("    return [g / scale for g in grads]\n"),
            {"scale_gradients": 1.0}, {"failed"}, "inverted"),
    Fixture("mutates-input", _scale("    for i in range(len(grads)):\n"
                                    "        grads[i] = float(grads[i]) * scale\n"
                                    "    return grads\n"),
            {"scale_gradients": 3.0}, {"failed"}, "not modified"),
    Fixture("returns-ints", _scale("    return [int(g * scale) if g == g and abs(g) != float('inf') "
                                   "else g * scale for g in grads]\n"),
            {"scale_gradients": 1.0}, {"failed"}, "float"),
    Fixture("raises", _scale("    raise ValueError('gradients are too small')\n"),
            {"scale_gradients": 0.0}, {"error"}, "ValueError"),
    Fixture("infinite-loop", _scale("    while True:\n        pass\n"),
            {"scale_gradients": 0.0}, {"timeout"}, "too long", timeout=1.5),
    Fixture("syntax-error", _scale("    return [g * scale for g in grads\n"),
            {"scale_gradients": 0.0}, {"error"}, "SyntaxError"),
    Fixture("sys-exit", _scale("    import sys\n    sys.exit(0)\n"),
            {"scale_gradients": 0.0}, {"error"}, "SystemExit"),
    Fixture("os-exit", _scale("    import os\n    os._exit(0)\n"),
            {"scale_gradients": 0.0}, {"crashed"}, "stopped the grading process"),
    # A leak into a global: the first call fills the memory limit, and every later
    # call fails at once (a bomb that refilled 2 GB on each of a check's many calls
    # would time out before it ran out of memory).
    Fixture("memory-bomb", {"scale_gradients": "hoard = []\n" + _scale(
        "    while True:\n        hoard.append(' ' * 2**24)\n")["scale_gradients"]},
            {"scale_gradients": 0.0}, {"memory"}, "memory"),
    Fixture("prints-100MB", {"scale_gradients": "print('x' * 100_000_000)\n" + CORRECT["scale_gradients"]},
            {}, {"passed"}),
    Fixture("monkeypatches-builtins-and-pytest", {"scale_gradients": (
        "import builtins, sys, types\n"
        "builtins.isinstance = lambda *a: True\n"
        "builtins.float = lambda *a: 0.0\n"
        "fake = types.ModuleType('pytest')\n"
        "fake.fail = fake.skip = lambda *a, **k: None\n"
        "sys.modules['pytest'] = fake\n"
        "import math\nmath.isfinite = lambda x: True\n"
        "def scale_gradients(grads, scale):\n"
        "    return [0.0 for g in grads]\n")},
            {"scale_gradients": 1.0}, {"failed"}, "multiply"),
    Fixture("always-equal-object", _scale(
        "    class Yes(list):\n"
        "        def __eq__(self, other):\n            return True\n"
        "        def __len__(self):\n            return len(grads)\n"
        "    return Yes()\n"),
            {"scale_gradients": 0.0}, {"failed"}, "subclass of list"),
    # Hardened isolation (class grading): each gets exactly what it earned.
    Fixture("reads-files-next-to-the-submission", _scale(
        "    import pathlib, sys\n"
        "    root = pathlib.Path(sys.prefix).parent\n"
        "    text = (root / 'grader' / 'checks' / 'test_03_loss_scaling.py').read_text()\n"
        "    text += (root / 'tests' / 'fixtures' / 'grading' / 'correct.ipynb').read_text()\n"
        "    print(text)\n"
        "    raise ValueError(text)\n"),
            {"scale_gradients": 0.0}, {"error"}, "scale_gradients"),
    Fixture("forges-a-results-file", {"scale_gradients": (
        "import json, os\n"
        "fake = {'lesson': '03_loss_scaling', 'score': 10, 'max_score': 10, 'tests': []}\n"
        "for path in ('results.json', '../results.json', '/tmp/results.json', 'report.json'):\n"
        "    try:\n"
        "        with open(path, 'w') as f:\n"
        "            json.dump(fake, f)\n"
        "    except OSError:\n"
        "        pass\n"
        "def scale_gradients(grads, scale):\n"
        "    return [0.0 for g in grads]\n")},
            {"scale_gradients": 1.0}, {"failed"}, "multiply"),
    Fixture("patches-float-list-and-math", {"scale_gradients": (
        "import builtins, math\n"
        "builtins.float = int\n"
        "builtins.list = tuple\n"
        "math.isfinite = math.isnan = lambda x: True\n"
        "def scale_gradients(grads, scale):\n"
        "    return [g * scale for g in grads]\n")},
            {}, {"passed"}),
    Fixture("lying-list-subclass", _scale(
        "    class Liar(list):\n"
        "        def __eq__(self, other):\n            return True\n"
        "        def __len__(self):\n            return len(grads)\n"
        "        def __iter__(self):\n            return iter([g * scale for g in grads])\n"
        "    return Liar()\n"),
            {"scale_gradients": 0.0}, {"failed"}, "subclass of list"),
    Fixture("lying-float-subclass", _scale(
        "    class Liar(float):\n"
        "        def __eq__(self, other):\n            return True\n"
        "        __hash__ = float.__hash__\n"
        "    return [Liar(g) for g in grads]\n"),
            {"scale_gradients": 0.0}, {"failed"}, "subclass of float"),
    Fixture("fork-bomb", _scale(
        "    import os\n"
        "    while True:\n"
        "        os.fork()\n"),
            {"scale_gradients": 0.0}, set(), "", timeout=3.0),
]


def notebook_for(fixture: Fixture) -> nbformat.NotebookNode:
    cells = [new_markdown_cell(f"# Lesson 03 submission: {fixture.name}")]
    support = new_code_cell("import math  # a learner's own setup cell; the grader uses the lesson's")
    cells.append(support)
    for number, (name, source) in enumerate(CORRECT.items(), start=1):
        cells.append(new_markdown_cell(f"### Exercise 3.{number} — {name}"))
        cell = new_code_cell(fixture.replace.get(name, source))
        cell.metadata = {"tags": ["exercise"], "course": {"exercise": name}}
        cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "course": {"lesson": "03_loss_scaling"}}
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"
    return nb


def path_for(fixture: Fixture) -> Path:
    return FOLDER / f"{fixture.name}.ipynb"


def write_all() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    for fixture in FIXTURES:
        nbformat.write(notebook_for(fixture), path_for(fixture))


if __name__ == "__main__":
    write_all()
