"""The learner bundle: built clean, the scan can fail, and self-checks work in a fresh venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from grader.release import ReleaseError, build_release, grader_imports, scan_bundle

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LESSON = "03_loss_scaling"


@pytest.fixture
def course(tmp_path):
    """A copy of the course with its finished lesson only, so lessons still being
    written elsewhere do not decide these tests (test_the_real_course_... does that)."""
    root = tmp_path / "course"
    shutil.copytree(ROOT / "grader", root / "grader", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("notebooks", "solutions"):
        (root / folder).mkdir()
        shutil.copy(ROOT / folder / f"{LESSON}.ipynb", root / folder)
    for name in ("environment.yml", "constraints.txt", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, root)
    return root


@pytest.fixture
def bundle(course, tmp_path):
    return build_release(tmp_path / "bundle", course)


def _files(folder):
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_the_bundle_is_clean_and_holds_what_learners_need(bundle, course):
    assert scan_bundle(bundle, course) == []
    selfchecks = {f"grader/{p.parent.name}/{p.name}" for folder in ("selfcheck", "labs")
                  for p in (course / "grader" / folder).glob("*.py")}
    assert _files(bundle) == {f"notebooks/{LESSON}.ipynb", "grader/__init__.py", "grader/render.py",
                              "environment.yml", "constraints.txt", "pyproject.toml", "README.md",
                              *selfchecks}
    env = yaml.safe_load((bundle / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert [line for line in pip if line.startswith("-")] == ["-c constraints.txt", "-e ."]
    names = [line.split(">")[0].split("=")[0] for line in pip if not line.startswith("-")]
    assert names == ["numpy", "torch", "matplotlib", "jupyterlab", "ipykernel"]
    project = tomllib.loads((bundle / "pyproject.toml").read_text())
    assert project["project"]["dependencies"] == [line for line in pip if not line.startswith("-")]
    assert project["tool"]["setuptools"]["packages"] == ["grader", "grader.selfcheck", "grader.labs"]
    def pins(path):
        return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]

    assert pins(bundle / "constraints.txt") == pins(course / "constraints.txt")
    readme = (bundle / "README.md").read_text()
    assert "pip install -c constraints.txt -e ." in readme and "conda env create" in readme
    assert "hidden" not in readme.lower()


def test_the_real_course_releases_clean(tmp_path):
    """The course as it stands: every lesson in notebooks/ and every solution."""
    try:
        out = build_release(tmp_path / "bundle", ROOT)
    except ReleaseError as exc:
        pytest.fail(str(exc), pytrace=False)
    assert scan_bundle(out, ROOT) == []


def test_the_scan_finds_a_hidden_checks_file(bundle, course):
    (bundle / "grader/checks").mkdir()
    shutil.copy(course / f"grader/checks/test_{LESSON}.py", bundle / "grader/checks")
    shutil.copy(course / "grader/runner.py", bundle / "grader")
    problems = "\n".join(scan_bundle(bundle, course))
    assert f"grader/checks/test_{LESSON}.py: a hidden checks file" in problems
    assert "names hidden check test_scale_gradients" in problems
    assert "grader/runner.py: not one of the public self-check modules" in problems


def test_the_scan_finds_a_solution_line_planted_in_a_notebook(bundle, course):
    path = bundle / "notebooks" / f"{LESSON}.ipynb"
    nb = json.loads(path.read_text())
    solution = json.loads((course / "solutions" / f"{LESSON}.ipynb").read_text())
    sources = ["".join(c["source"]) for c in solution["cells"]]
    source = next(text for text in sources if "### BEGIN SOLUTION" in text)
    answer = source.split("### BEGIN SOLUTION\n", 1)[1].splitlines()[0]
    cell = next(c for c in nb["cells"] if "exercise" in c["metadata"].get("tags", []))
    cell["source"] = "".join(cell["source"]) + "\n" + answer + "\n"
    path.write_text(json.dumps(nb, indent=1))
    problems = scan_bundle(bundle, course)
    assert any("contains solution line" in p and f"{LESSON}.ipynb" in p for p in problems), problems


def test_the_scan_finds_markers_and_stored_outputs(bundle, course):
    path = bundle / "notebooks" / f"{LESSON}.ipynb"
    nb = json.loads(path.read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hi\n"}]
    code["source"] = "### BEGIN SOLUTION\n"
    path.write_text(json.dumps(nb))
    problems = "\n".join(scan_bundle(bundle, course))
    assert "contains a solution marker" in problems and "has stored outputs" in problems


def test_a_non_empty_out_dir_is_refused(course, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ReleaseError, match="not an empty folder"):
        build_release(out, course)
    assert _files(out) == {"keep.txt"}


def test_a_public_module_that_imports_a_private_one_fails_the_build(course, tmp_path):
    module = course / "grader/selfcheck/loss_scaling.py"
    module.write_text(module.read_text() + "\nfrom ..runner import checks_file\n")
    with pytest.raises(ReleaseError, match=r"loss_scaling.py imports grader.runner"):
        build_release(tmp_path / "bundle", course)
    assert not (tmp_path / "bundle").exists()  # nothing half-built is left to upload


def test_a_notebook_that_imports_a_private_or_missing_module_fails_the_build(course, tmp_path):
    path = course / "notebooks" / f"{LESSON}.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                        "source": "%matplotlib inline\nfrom grader.grade import grade\n"
                                  "from grader.selfcheck.nowhere import check\n"
                                  "from grader import __version__\n"})
    path.write_text(json.dumps(nb))
    with pytest.raises(ReleaseError) as info:
        build_release(tmp_path / "bundle", course)
    assert "imports grader.grade, which learners do not get" in str(info.value)
    assert "imports grader.selfcheck.nowhere, which does not exist" in str(info.value)
    assert "__version__" not in str(info.value)


def test_grader_imports_resolves_relative_and_dynamic_imports():
    source = ("from . import core\nfrom ..checks import x\nimport grader.grade as g\n"
              "import importlib\nimportlib.import_module('grader.runner')\nimport math\n")
    assert grader_imports(source, "grader.selfcheck") == {
        "grader.selfcheck", "grader.selfcheck.core", "grader.checks", "grader.checks.x",
        "grader.grade", "grader.runner"}


_PROBE = r"""
import contextlib, importlib, io, json, pkgutil
import grader, grader.selfcheck

modules = sorted(m.name for m in pkgutil.iter_modules(grader.selfcheck.__path__))
for name in modules:
    importlib.import_module(f"grader.selfcheck.{name}")
from grader.selfcheck.loss_scaling import check_scale_gradients

def stub(grads, scale):
    raise NotImplementedError("Exercise 3.1: scale_gradients")

def run(fn):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        returned = check_scale_gradients(fn)
    return returned, out.getvalue()

private = []
for name in ("grader.checks", "grader.grade", "grader.runner", "grader.sandbox"):
    try:
        importlib.import_module(name)
        private.append(name)
    except ImportError:
        pass
print(json.dumps({"modules": modules, "where": grader.__file__, "private": private,
                  "correct": run(lambda g, s: [float(x) * s for x in g]), "stub": run(stub)}))
"""


@pytest.mark.slow
def test_self_checks_work_in_a_fresh_venv_built_from_the_bundle(bundle, tmp_path):
    """The pip equivalent of `conda env create -f environment.yml`: a fresh venv and
    `pip install` of exactly the bundle's environment.yml pip list, run in the bundle.

    The third-party packages are offered to the new venv from this test's own
    environment, as a plain path (a `.pth` line, so none of that environment's own
    `.pth` hooks run and the course's `grader` stays invisible): pip finds them
    already installed and installs the bundle alone, in seconds instead of the
    35-120 s that copying torch took. What is checked is unchanged: the bundle's
    requirements resolve, and its `grader` package is complete on its own.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").is_dir())
    (Path(site) / "course-test-packages.pth").write_text(f"{ours}\n")
    env = yaml.safe_load((bundle / "environment.yml").read_text())
    pip_args = [a for line in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
                for a in (line.split(" ", 1) if line.startswith("-") else [line])]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    proc = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           *pip_args], cwd=bundle, env=clean, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([python, "-c", _PROBE], cwd=tmp_path, env=clean, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["where"].startswith(str(bundle))  # the bundle's grader, not the course's
    assert result["private"] == []
    assert result["modules"] == sorted(p.stem for p in (bundle / "grader/selfcheck").glob("*.py")
                                       if p.stem != "__init__")
    returned, table = result["correct"]
    assert returned is None and "Result: all passed" in table and "FAIL" not in table
    returned, table = result["stub"]
    assert returned is None and "not implemented yet" in table and "Traceback" not in table
