"""The learner bundle: what a class downloads, and the scan proving it leaks nothing.

Owns build_release (notebooks, the public self-check modules, a learner
environment.yml / pyproject.toml / README.md, constraints.txt) and
scan_bundle (hidden checks, solution markers and lines, hidden check names,
stored outputs). Nothing here grades.
"""

from __future__ import annotations

import ast
import re
import shutil
from fnmatch import fnmatch
from pathlib import Path

import nbformat

from grader.markers import solution_only_lines

# What a learner's notebook imports from grader; nothing else of the package ships.
PUBLIC_MODULES = ("grader/__init__.py", "grader/render.py", "grader/selfcheck/*.py", "grader/labs/*.py")
LEARNER_PACKAGES = ("numpy", "torch", "matplotlib", "jupyterlab", "ipykernel")
_REQ_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DOTTED_GRADER = re.compile(r"\bgrader(?:\.\w+)+")


class ReleaseError(ValueError):
    """The bundle cannot be built, or would leak; the message says what to fix."""


def _public_files(course_root: Path) -> list[Path]:
    return sorted(p for pattern in PUBLIC_MODULES for p in course_root.glob(pattern))


def _module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def grader_imports(source: str, package: str) -> set[str]:
    """Every grader.* module `source` (a module of `package`) imports, or names in a string."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this module's package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from grader import render`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= set(_DOTTED_GRADER.findall(node.value))  # importlib.import_module("grader.x")
    return {m for m in found if m == "grader" or m.startswith("grader.")}


def _import_problem(name: str, allowed: set[str], grader_dir: Path) -> str | None:
    if name in allowed:
        return None
    parts = name.split(".")[1:]
    target = grader_dir.joinpath(*parts)
    if target.with_suffix(".py").exists() or target.is_dir():
        return "which learners do not get"
    init = grader_dir.joinpath(*parts[:-1], "__init__.py")
    if ".".join(["grader", *parts[:-1]]) in allowed and (
            not init.exists() or re.search(rf"\b{parts[-1]}\b", init.read_text(encoding="utf-8"))):
        return None  # an attribute of a public module, e.g. `from grader import __version__`
    return "which does not exist"


def _check_public_imports(course_root: Path, files: list[Path], notebooks: list[Path]) -> None:
    """The public modules, and the learner notebooks, import only public modules."""
    grader_dir = course_root / "grader"
    allowed = {_module_name(p.relative_to(course_root)) for p in files}
    sources = [(p, ".".join(p.relative_to(course_root).parent.parts), p.read_text(encoding="utf-8"))
               for p in files]
    for nb in notebooks:
        for cell in nbformat.read(nb, as_version=4).cells:
            if cell.cell_type == "code":  # magics and shell lines are not Python
                code = cell.source.splitlines()
                sources.append((nb, "", "\n".join(x for x in code if not x.lstrip().startswith(("%", "!")))))
    problems = []
    for path, package, source in sources:
        try:
            names = grader_imports(source, package)
        except SyntaxError:
            continue  # a learner notebook's unfinished exercise; the notebooks' own tests cover it
        for name in sorted(names):
            why = _import_problem(name, allowed, grader_dir)
            if why:
                problems.append(f"{path.relative_to(course_root)} imports {name}, {why}")
    if problems:
        raise ReleaseError("the learner bundle would import beyond its public modules:\n  "
                           + "\n  ".join(dict.fromkeys(problems)))


def _learner_environment(text: str) -> tuple[str, list[str]]:
    """The course's environment.yml with a pip section of only what learners need."""
    lines, requirements, in_pip = [], [], False
    for line in text.splitlines():
        item = line.strip()
        if item.startswith("#"):
            continue  # the course's comments are about instructor tooling
        if in_pip and item.startswith("- "):
            spec = item[2:].strip()
            if spec.startswith("-"):
                lines.append(line)
            elif _REQ_NAME.match(spec).group().lower() in LEARNER_PACKAGES:
                lines.append(line)
                requirements.append(spec)
            continue
        in_pip = item == "- pip:"
        lines.append(line)
    missing = set(LEARNER_PACKAGES) - {_REQ_NAME.match(r).group().lower() for r in requirements}
    if missing:
        raise ReleaseError(f"environment.yml does not list {', '.join(sorted(missing))}")
    header = ("# Conda route: conda env create -f environment.yml && conda activate mp-course\n"
              "# pip route: python -m pip install -c constraints.txt -e .\n")
    return header + "\n".join(lines) + "\n", requirements


def _pyproject(version: str, requirements: list[str]) -> str:
    deps = "".join(f'    "{r}",\n' for r in requirements)
    return f"""[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "mp-course-learner"
version = "{version}"
description = "Mixed-precision training, taught by doing: the learner's lessons and self-checks"
readme = "README.md"
requires-python = ">=3.10"
dependencies = [
{deps}]

[tool.setuptools]
packages = ["grader", "grader.selfcheck", "grader.labs"]
"""


README = """# Mixed-precision training, by doing: learner edition

Lessons in `notebooks/` walk from the bits of a float to mixed-precision
training on a GPU. Each exercise asks you to fill in a function.

## Set up (once)

With pip (Python >= 3.10):

```bash
python -m venv .venv
.venv/bin/python -m pip install -c constraints.txt -e .
.venv/bin/jupyter lab notebooks/
```

With conda:

```bash
conda env create -f environment.yml
conda activate mp-course
jupyter lab notebooks/
```

## Installing torch

`constraints.txt` pins the torch release the lessons were tested with. On a
CPU-only machine you may prefer PyTorch's CPU-only wheels: add
`--extra-index-url <PyTorch CPU wheel index>` to the pip command (the URL is on
PyTorch's "Get started" page). Every lesson runs on a CPU.

## Working through a lesson

Run the cells from the top. Write your answer in place of the
`raise NotImplementedError(...)` line of each exercise, and keep everything
your function needs inside that cell. The cell after each exercise is a
**self-check**: it runs your function on a few small cases and prints a table
of what was checked, what was expected, what came back and a likely cause for
anything that failed. "not implemented yet" means the exercise still raises
`NotImplementedError`.

Self-checks are a quick guide, not your grade. Your instructor grades the
notebook you submit, separately, with more cases; only the exercise cells are
graded, so submit the `.ipynb` file itself, saved from Jupyter.
"""


def build_release(out_dir: Path, course_root: Path) -> Path:
    """Build the learner bundle in `out_dir` (which must be empty or absent)."""
    out_dir, course_root = Path(out_dir), Path(course_root)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ReleaseError(f"{out_dir}: already exists and is not an empty folder; "
                           "pick a new folder or empty this one.")
    files = _public_files(course_root)
    notebooks = sorted((course_root / "notebooks").glob("*.ipynb"))
    _check_public_imports(course_root, files, notebooks)
    environment, requirements = _learner_environment(
        (course_root / "environment.yml").read_text(encoding="utf-8"))
    version = re.search(r'__version__\s*=\s*"([^"]+)"',
                        (course_root / "grader/__init__.py").read_text(encoding="utf-8")).group(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for path in files:
            target = out_dir / path.relative_to(course_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        (out_dir / "notebooks").mkdir()
        for path in notebooks:
            shutil.copyfile(path, out_dir / "notebooks" / path.name)
        pins = [line for line in (course_root / "constraints.txt").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]  # the comments are for instructors
        (out_dir / "constraints.txt").write_text(
            "# The releases these lessons were tested with; see README.md (\"Installing torch\").\n"
            + "\n".join(pins) + "\n", encoding="utf-8")
        (out_dir / "environment.yml").write_text(environment, encoding="utf-8")
        (out_dir / "pyproject.toml").write_text(_pyproject(version, requirements), encoding="utf-8")
        (out_dir / "README.md").write_text(README, encoding="utf-8")
        problems = scan_bundle(out_dir, course_root)
        if problems:
            raise ReleaseError("the learner bundle would leak:\n  " + "\n  ".join(problems))
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # never leave a half-built or leaking bundle
        raise
    return out_dir


def _solution_lines(course_root: Path) -> set[str]:
    # The whole course at once: a line one lesson shows in the open is no secret in another.
    return solution_only_lines(*(nbformat.read(path, as_version=4)
                                 for path in sorted((course_root / "solutions").glob("*.ipynb"))))


def _hidden_names(course_root: Path) -> set[str]:
    pattern = re.compile(r"^\s*(?:async\s+)?def\s+(test_\w+)", re.M)
    return {name for path in (course_root / "grader/checks").glob("test_*.py")
            for name in pattern.findall(path.read_text(encoding="utf-8"))}


def _text(path: Path) -> tuple[str, bool]:
    """A file's text (a notebook's cell sources too, decoded); and whether it has outputs."""
    raw = path.read_bytes().decode("utf-8", "replace")
    if path.suffix != ".ipynb":
        return raw, False
    try:
        nb = nbformat.reads(raw, as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable notebook is scanned as raw text
        return raw, False
    sources = [cell.source for cell in nb.cells]
    return raw + "\n" + "\n".join(sources), any(cell.get("outputs") for cell in nb.cells)


def scan_bundle(out_dir: Path, course_root: Path) -> list[str]:
    """Everything in the bundle that a learner must not see (empty when clean): hidden
    checks or other private grader modules, solution markers or lines, hidden check
    names, and notebooks with stored outputs."""
    out_dir, course_root = Path(out_dir), Path(course_root)
    solution_lines, hidden = _solution_lines(course_root), _hidden_names(course_root)
    problems = []
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(out_dir).as_posix()
        if rel.startswith("grader/checks/"):
            problems.append(f"{rel}: a hidden checks file")
        elif rel.startswith("grader/") and not any(fnmatch(rel, p) for p in PUBLIC_MODULES):
            problems.append(f"{rel}: not one of the public self-check modules")
        text, has_outputs = _text(path)
        if "BEGIN SOLUTION" in text or "END SOLUTION" in text:
            problems.append(f"{rel}: contains a solution marker")
        problems += [f"{rel}: contains solution line {line!r}"
                     for line in sorted(solution_lines) if line in text]
        problems += [f"{rel}: names hidden check {name}" for name in sorted(hidden)
                     if re.search(rf"\b{name}\b", text)]
        if has_outputs:
            problems.append(f"{rel}: has stored outputs (learners should start from a clean notebook)")
    return problems
