"""environment.yml and pyproject.toml name the same packages with the same versions."""

import sys

import yaml
from packaging.requirements import Requirement

from conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _requirements(lines):
    return {str(Requirement(line)) for line in lines}


def _pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return _requirements(project["dependencies"] + project["optional-dependencies"]["dev"])


def _environment():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return _requirements(line for line in pip if not line.startswith("-"))


def test_environment_yml_and_pyproject_name_the_same_packages():
    assert _environment() == _pyproject()


def test_conda_route_installs_the_course_itself_with_the_tested_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip and "-c constraints.txt" in pip


def test_torch_is_pinned_to_a_release_the_lower_bound_admits():
    pins = [Requirement(line) for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    torch_pin = next(r for r in pins if r.name == "torch")
    pinned = next(iter(torch_pin.specifier)).version
    torch_range = next(Requirement(r) for r in _pyproject() if Requirement(r).name == "torch")
    assert torch_range.specifier.contains(pinned)
