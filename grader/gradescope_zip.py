"""The Gradescope autograder zip: setup.sh and run_autograder beside the course source.

Gradescope extracts the zip to /autograder/source and runs setup.sh from there
once, as root, when it builds the image (gradescope/autograder_samples
docs/specs.md); run_autograder is copied to /autograder/run_autograder and run
for each submission. The zip built for an assignment carries the course's
assignments.toml, and run_autograder names the assignment, so Gradescope counts
the same exercises, points, late policy and selection rule as `grade-class`.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update && apt-get install -y python3 python3-pip
fi
# The grader needs Python 3.10 or newer; older Ubuntu images ship older ones.
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "setup.sh: this autograder needs Python 3.10 or newer, and this image has" \\
         "$(python3 --version 2>&1)." >&2
    echo "setup.sh: on the assignment's Configure Autograder page, choose the base image" \\
         "Ubuntu 22.04 or newer (its python3 is 3.10+), then upload this zip again." >&2
    exit 1
fi
# The image holds nothing but this autograder, so installing into the system Python
# is fine; newer Ubuntu images refuse that (PEP 668) unless told.
export PIP_BREAK_SYSTEM_PACKAGES=1
# PyTorch's CPU-only wheels: Gradescope has no GPU, and PyPI's Linux wheel is a multi-GB
# CUDA build. constraints.txt's torch==X matches X+cpu, which is preferred.
python3 -m pip install --extra-index-url https://download.pytorch.org/whl/cpu \\
    -c /autograder/source/constraints.txt /autograder/source/
# Hidden checks are for instructors only: where the container refuses namespaces, workers
# run under an unused uid, and file permissions (with Landlock) are what hide them. pip
# copied the checks into site-packages too, readable by everyone until this line.
chmod -R o= /autograder/source "$(python3 -c 'import grader, os; print(os.path.dirname(grader.__file__))')/checks"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission. AUTOGRADER_ROOT and PYTHON let a test run
# it in a temporary folder; there it also needs PYTHONPATH=$AUTOGRADER_ROOT/source
# (on Gradescope setup.sh's pip install makes the grader importable).
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
cd "$ROOT"
exec "${{PYTHON:-python3}}" -m grader.gradescope run "$ROOT"{arguments}
"""

_SOURCE_FILES = ("pyproject.toml", "constraints.txt", "README.md")
ASSIGNMENTS = "assignments.toml"


def build_autograder_zip(out_zip: Path, course_root: Path, assignment: str | None = None,
                         assignments_file: Path | None = None) -> Path:
    """Write the zip. With `assignment`, the zip grades that assignment of `assignments_file`
    (by default the course's assignments.toml); check it first with assignments.load_assignment."""
    course_root, out_zip = Path(course_root), Path(out_zip)
    if assignment and not re.fullmatch(r"[A-Za-z0-9_.-]+", assignment):
        raise ValueError(f"assignment id {assignment!r}: use letters, digits, '_', '.' or '-'")
    arguments = f" --assignment {assignment}" if assignment else ""
    entries: dict[str, bytes] = {"setup.sh": SETUP_SH.encode(),
                                 "run_autograder": RUN_AUTOGRADER.format(arguments=arguments).encode()}
    for name in _SOURCE_FILES:
        entries[name] = (course_root / name).read_bytes()
    for path in sorted((course_root / "grader").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            entries[path.relative_to(course_root).as_posix()] = path.read_bytes()
    for path in sorted((course_root / "notebooks").glob("*.ipynb")):
        entries[f"notebooks/{path.name}"] = path.read_bytes()
    if assignment:
        entries[ASSIGNMENTS] = Path(assignments_file or course_root / ASSIGNMENTS).read_bytes()
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_zip.with_name(out_zip.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(entries.items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # same input, same zip
            executable = name in ("setup.sh", "run_autograder")
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    tmp.replace(out_zip)
    return out_zip
